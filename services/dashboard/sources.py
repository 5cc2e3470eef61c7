"""Where the dashboard reads the mesh: sidecars in Consul, their metrics ports, proxy sync state and config history.

Every read has a deadline and fails soft: a source that cannot be read adds a line to `problems`
and leaves its part of the page empty, the rest still updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import nats
from nats.js.errors import BucketNotFoundError

from services.cli.proxy_status import collect
from shared.bus.names import CONFIG_BUCKET
from shared.consul import MESH_TAG, META_NAMESPACE, META_PROMETHEUS_PORT, META_VERSION

TIMEOUT = aiohttp.ClientTimeout(total=3)
RECENT_CHANGES = 15


@dataclass(frozen=True, slots=True)
class Sidecar:
    proxy_id: str
    service: str
    namespace: str
    version: str
    address: str
    prometheus_port: int | None
    healthy: bool

    @property
    def metrics_url(self) -> str | None:
        if self.prometheus_port is None:
            return None
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.prometheus_port}/stats/prometheus"


def _port(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() and 0 < int(text) < 65536 else None


async def sidecars(session: aiohttp.ClientSession, consul_addr: str) -> list[Sidecar]:
    """Every instance of every service tagged as meshed, from the Consul catalog."""
    base = f"http://{consul_addr}/v1"
    async with session.get(f"{base}/catalog/services", timeout=TIMEOUT) as reply:
        reply.raise_for_status()
        services: dict[str, list[str]] = await reply.json()
    found = []
    for name, tags in sorted(services.items()):
        if MESH_TAG not in (tags or []):
            continue
        async with session.get(f"{base}/health/service/{name}", timeout=TIMEOUT) as reply:
            reply.raise_for_status()
            entries: list[dict[str, Any]] = await reply.json()
        for entry in entries:
            service = entry["Service"]
            meta = service.get("Meta") or {}
            found.append(
                Sidecar(
                    proxy_id=service["ID"],
                    service=service["Service"],
                    namespace=meta.get(META_NAMESPACE, "default"),
                    version=meta.get(META_VERSION, "unknown"),
                    address=service.get("Address") or entry.get("Node", {}).get("Address", "127.0.0.1"),
                    prometheus_port=_port(meta.get(META_PROMETHEUS_PORT)),
                    healthy=all(check.get("Status") == "passing" for check in entry.get("Checks", [])),
                )
            )
    return found


async def scrape(session: aiohttp.ClientSession, sidecar: Sidecar) -> str | None:
    url = sidecar.metrics_url
    if url is None:
        return None
    try:
        async with session.get(url, timeout=TIMEOUT) as reply:
            return await reply.text() if reply.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def sync_states(nats_url: str) -> dict[str, dict[str, str]]:
    """proxy id -> {state, sent, running}, as `isthmus proxy-status` shows them."""
    rows = await collect(nats_url)  # bounded inside: connect 3 s, bucket reads LIST_TIMEOUT
    return {row.proxy_id: {"state": row.state, "sent": row.sent_version, "running": row.acked_version} for row in rows}


async def config_changes(nats_url: str, limit: int = RECENT_CHANGES) -> list[dict[str, Any]]:
    """The latest writes and deletes in galley's config bucket (its kept history), newest first."""
    connection = await nats.connect(nats_url, connect_timeout=3, max_reconnect_attempts=0)
    try:
        try:
            kv = await connection.jetstream().key_value(CONFIG_BUCKET)
        except BucketNotFoundError:
            return []
        watcher = await kv.watchall(include_history=True, meta_only=True)
        entries = []
        try:
            while True:
                entry = await watcher.updates(timeout=3)  # type: ignore[no-untyped-call]
                if entry is None:
                    break
                entries.append(entry)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
    finally:
        await connection.close()
    changes = []
    for entry in sorted(entries, key=lambda e: e.revision or 0, reverse=True)[:limit]:
        kind, _, rest = entry.key.partition(".")
        namespace, _, name = rest.partition(".")
        changes.append(
            {
                "revision": entry.revision,
                "operation": str(entry.operation or "PUT").rsplit(".", 1)[-1],
                "kind": kind,
                "namespace": namespace,
                "name": name,
                "created": _unix_time(getattr(entry, "created", None)),
            }
        )
    return changes


def _unix_time(created: object) -> float | None:
    """nats-py gives a datetime or nanoseconds depending on the version."""
    if isinstance(created, datetime):
        return created.timestamp()
    if isinstance(created, int | float):
        return created / 1e9 if created > 1e12 else float(created)
    return None
