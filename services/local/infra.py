"""Starts the infrastructure the mesh runs on: nats-server with JetStream and a Consul dev agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.js.errors

from services.local import binaries
from services.local.processes import Child, Supervisor, free_port, port_open, require_free, wait_until
from shared.bus.names import PROXY_CONFIG_BUCKET, PROXY_STATUS_BUCKET


@dataclass(frozen=True)
class NatsHandle:
    child: Child
    port: int
    store_dir: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class ConsulHandle:
    child: Child
    http_port: int

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.http_port}"


def nats_argv(port: int, store_dir: Path) -> list[str]:
    return [binaries.nats_server(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)]


def start_nats(supervisor: Supervisor, state_dir: Path, port: int | None = None, timeout: float = 20) -> NatsHandle:
    if port:
        require_free(port, "nats-server", "--nats-port")
    port = port or free_port()
    store_dir = state_dir / "nats"
    store_dir.mkdir(parents=True, exist_ok=True)
    child = supervisor.start("nats", nats_argv(port, store_dir))
    wait_until(lambda: port_open("127.0.0.1", port) or not child.alive, timeout, "nats-server")
    if not child.alive:
        raise RuntimeError(f"nats-server exited:\n{child.log_tail()}")
    return NatsHandle(child=child, port=port, store_dir=store_dir)


def forget_earlier_proxies(nats_url: str) -> None:
    """Delete the proxy config and status buckets a previous local run left in the JetStream store.

    The store persists across runs (applied config survives a restart) but the Consul dev agent starts empty,
    so the proxies of an earlier run are gone: without this, `isthmus proxy-status` would list them as SYNCED
    until pilot's grace period ends. Pilot rewrites every live proxy's key, so nothing current is lost.
    """
    asyncio.run(_delete_buckets(nats_url, (PROXY_CONFIG_BUCKET, PROXY_STATUS_BUCKET)))


async def _delete_buckets(nats_url: str, buckets: tuple[str, ...]) -> None:
    client = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = client.jetstream()
        for bucket in buckets:
            with contextlib.suppress(nats.js.errors.NotFoundError, nats.js.errors.BucketNotFoundError):
                await js.delete_key_value(bucket)
    finally:
        await client.close()


def restart_nats(supervisor: Supervisor, handle: NatsHandle, timeout: float = 20) -> NatsHandle:
    """Start nats-server again on the same port and store (after handle.child was stopped or killed)."""
    supervisor.children.remove(handle.child)
    return start_nats(supervisor, handle.store_dir.parent, port=handle.port, timeout=timeout)


def _consul_leader(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/status/leader", timeout=1) as reply:
            return bool(json.loads(reply.read()))
    except OSError:
        return False


def start_consul(
    supervisor: Supervisor, state_dir: Path, http_port: int | None = None, timeout: float = 30
) -> ConsulHandle:
    if http_port:
        require_free(http_port, "Consul", "--consul-port")
    http_port = http_port or free_port()
    argv = [
        binaries.consul(), "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
        "-node", "isthmus-local", "-log-level", "warn",
        f"-http-port={http_port}", "-dns-port=-1", "-grpc-port=-1",
        f"-server-port={free_port()}", f"-serf-lan-port={free_port()}", f"-serf-wan-port={free_port()}",
    ]  # fmt: skip
    child = supervisor.start("consul", argv)
    wait_until(lambda: _consul_leader(http_port) or not child.alive, timeout, "consul agent")
    if not child.alive:
        raise RuntimeError(f"consul exited:\n{child.log_tail()}")
    return ConsulHandle(child=child, http_port=http_port)
