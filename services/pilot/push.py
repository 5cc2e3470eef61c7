"""Push layer: after each debounced change, build one snapshot, generate every proxy's config, write changes.

A proxy's config is written to PROXY_CONFIG_BUCKET under `proxy_key(proxy_id)` only when its version
(the content hash) differs from the version stored there, and only if nobody wrote the key since it was
read, so several pilots with the same input write each version once and never churn the bucket.
A failed write is retried on the next push (one is scheduled after `retry_delay`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.pilot.debounce import Debouncer
from services.pilot.generate import generate
from services.pilot.metrics import PilotMetrics
from services.pilot.snapshot import Snapshot
from shared.bus.names import proxy_key
from shared.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

_WRITE_ATTEMPTS = 3
DEFAULT_WRITE_WIDTH = 64
"""Proxy configs written concurrently (each write is one round trip to NATS)."""


class ProxyConfigStore(Protocol):
    """Where generated configs go: the proxy config bucket in production."""

    async def stored_version(self, key: str) -> str | None: ...

    async def put(self, key: str, value: bytes, version: str) -> bool | None:
        """Write `value` (a config of `version`); False when the key already held that version (None: unknown)."""
        ...


class PushListener(Protocol):
    """Told after each push which proxies got a new version (proxy key -> version) for a change observed when."""

    async def pushed(self, snapshot: Snapshot, observed_at: float, written: dict[str, str]) -> None: ...


class KvProxyConfigStore:
    """Writes are conditional on the revision last read, so pilots racing on one key write it once: the loser
    re-reads, finds the version it wanted already there, and leaves it."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._revisions: dict[str, int | None] = {}

    async def _read(self, key: str) -> tuple[str | None, int | None]:
        try:
            entry = await self._kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None, None
        try:
            version = json.loads(entry.value or b"{}").get("version")
        except (ValueError, AttributeError):
            version = None
        return (version if isinstance(version, str) else None), entry.revision

    async def stored_version(self, key: str) -> str | None:
        version, self._revisions[key] = await self._read(key)
        return version

    async def put(self, key: str, value: bytes, version: str) -> bool:
        revision = self._revisions.get(key)
        for _ in range(_WRITE_ATTEMPTS):
            try:
                if revision is None:
                    self._revisions[key] = await self._kv.create(key, value)
                else:
                    self._revisions[key] = await self._kv.update(key, value, last=revision)
                return True
            except KeyWrongLastSequenceError:
                stored, revision = await self._read(key)
                self._revisions[key] = revision
                if stored == version:
                    return False  # another pilot wrote the same config first
        self._revisions[key] = await self._kv.put(key, value)
        return True

    def forget(self, key: str) -> None:
        self._revisions.pop(key, None)


@dataclass(frozen=True)
class _Stamped:
    """One proxy's generated config, serialized once, with its content-hash version."""

    proxy_id: str
    version: str
    payload: bytes


class Pusher:
    def __init__(
        self,
        store: ProxyConfigStore,
        current: Callable[[], Snapshot],
        debouncer: Debouncer,
        metrics: PilotMetrics,
        trust_domain: str,
        root_namespace: str,
        clock: Clock = SYSTEM_CLOCK,
        retry_delay: float = 1.0,
        listeners: Sequence[PushListener] = (),
        write_width: int = DEFAULT_WRITE_WIDTH,
    ) -> None:
        self._store = store
        self._current = current
        self._debouncer = debouncer
        self._metrics = metrics
        self._trust_domain = trust_domain
        self._root_namespace = root_namespace
        self._clock = clock
        self._retry_delay = retry_delay
        self._listeners = tuple(listeners)
        self._write_width = write_width
        self._written: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        """proxy id -> version generated from the latest snapshot (what /debug/proxies shows)."""
        self.snapshot = Snapshot()

    async def run(self) -> None:
        """Forever: wait for a debounced change, push the current snapshot."""
        while True:
            await self._debouncer.wait()
            observed = self._debouncer.first_change
            failed = await self.push(self._current(), observed if observed is not None else self._clock.monotonic())
            if failed:
                await self._clock.sleep(self._retry_delay)
                self._debouncer.notify()

    def forget(self, key: str) -> None:
        """The proxy's key was deleted: write it again if the proxy comes back."""
        self._written.pop(key, None)
        forget = getattr(self._store, "forget", None)
        if forget is not None:
            forget(key)

    async def push(self, snapshot: Snapshot, observed_at: float | None = None) -> int:
        """Generate and write every proxy whose stored version differs; returns the number of failures."""
        started = time.perf_counter()
        observed = observed_at if observed_at is not None else self._clock.monotonic()
        written: dict[str, str] = {}
        self.snapshot = snapshot
        self._metrics.proxies.set(len(snapshot.proxies))
        self._metrics.catalog_services.set(len(snapshot.services))
        self._metrics.catalog_instances.set(len(snapshot.instances))
        self._metrics.config_resources.set(len(snapshot.resources))
        versions: dict[str, str] = {}
        configs: list[_Stamped] = []
        failed = 0
        for index, proxy in enumerate(snapshot.proxies):
            try:
                version, payload = generate(snapshot, proxy, self._trust_domain, self._root_namespace).stamped()
            except Exception:
                failed += 1
                self._metrics.push_errors.inc()
                log.exception("push: proxy %s not generated", proxy.proxy_id)
                continue
            versions[proxy.proxy_id] = version
            configs.append(_Stamped(proxy.proxy_id, version, payload))
            if index % 16 == 15:
                await asyncio.sleep(0)  # generation is CPU work: let the watches and HTTP run between proxies
        gate = asyncio.Semaphore(self._write_width)

        async def write(config: _Stamped) -> bool:
            async with gate:
                try:
                    if await self._write(config):
                        written[proxy_key(config.proxy_id)] = config.version
                    return True
                except Exception:
                    self._metrics.push_errors.inc()
                    log.exception("push: proxy %s not updated", config.proxy_id)
                    return False

        failed += sum(1 for ok in await asyncio.gather(*(write(config) for config in configs)) if not ok)
        self.versions = versions
        self._metrics.push_duration.observe(time.perf_counter() - started)
        for listener in self._listeners:
            try:
                await listener.pushed(snapshot, observed, written)
            except Exception:  # bookkeeping after a push never stops the pushes
                log.exception("push: listener %r failed", listener)
        return failed

    async def _write(self, config: _Stamped) -> bool:
        """True when the proxy's key now holds a version it did not hold before this pilot looked."""
        key = proxy_key(config.proxy_id)
        if self._written.get(key) == config.version:
            return False
        known = self._written.get(key)
        # A key this pilot wrote or checked before is written straight away: the store's write is conditional on
        # the revision it last saw, so a write by another pilot meanwhile is still noticed.
        changed = True if known is not None else await self._store.stored_version(key) != config.version
        if changed:
            changed = await self._store.put(key, config.payload, config.version) is not False
        if changed:
            self._metrics.pushes.inc()
            log.info("push: proxy %s -> version %s", config.proxy_id, config.version)
        self._written[key] = config.version
        return changed
