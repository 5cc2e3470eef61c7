"""Pilot's watches through outages of their own nats-server and Consul agent (started for these tests)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import nats
import pytest

from services.local.infra import ConsulHandle, NatsHandle, restart_nats, start_consul, start_nats
from services.local.processes import Supervisor
from services.pilot.app import open_bucket
from services.pilot.catalog_watch import CatalogWatch
from services.pilot.config_watch import ConfigWatch
from services.pilot.metrics import PilotMetrics
from shared.bus.names import CONFIG_BUCKET, config_key

pytestmark = pytest.mark.integration

DEADLINE = 20.0


def resource(name: str) -> bytes:
    document = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hosts": [name], "http": [{"route": [{"destination": {"host": name}}]}]},
    }
    return json.dumps(document).encode()


async def until(check: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {DEADLINE}s: {what}")


RECOVERY = 5.0
"""Well under the ~20 s the watch's ordered consumer alone needs to notice a restarted server."""


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    own = Supervisor(tmp_path / "logs")
    yield own
    own.stop_all()


async def test_config_watch_follows_the_bucket_across_a_nats_restart(supervisor: Supervisor, tmp_path: Path) -> None:
    server: NatsHandle = await asyncio.to_thread(start_nats, supervisor, tmp_path)
    watches: list[ConfigWatch] = []

    async def reconnected() -> None:
        for watch in watches:
            await watch.resync()

    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, reconnected_cb=reconnected)
    try:
        kv = await open_bucket(nc.jetstream(), CONFIG_BUCKET)
        await kv.put(config_key("VirtualService", "default", "one"), resource("one"))
        await kv.put(config_key("VirtualService", "default", "bad"), b"[1, 2")
        changes: list[int] = []
        watch = ConfigWatch(kv, lambda: changes.append(1), PilotMetrics())
        watches.append(watch)
        task = asyncio.create_task(watch.run())
        await asyncio.wait_for(watch.synced.wait(), DEADLINE)
        assert [r.metadata.name for r in watch.current()] == ["one"]

        server.child.kill()
        server = await asyncio.to_thread(restart_nats, supervisor, server)
        await until(lambda: nc.is_connected, "client reconnected")
        await kv.put(config_key("VirtualService", "default", "two"), resource("two"))
        restarted = time.monotonic()
        await until(lambda: len(watch.current()) == 2, "a value written after the restart is seen")
        assert time.monotonic() - restarted < RECOVERY
        await kv.delete(config_key("VirtualService", "default", "one"))
        await until(lambda: [r.metadata.name for r in watch.current()] == ["two"], "a delete is seen")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await nc.close()


@pytest.fixture
async def own_consul(supervisor: Supervisor, tmp_path: Path) -> AsyncIterator[ConsulHandle]:
    yield await asyncio.to_thread(start_consul, supervisor, tmp_path)


async def test_catalog_watch_keeps_the_last_instances_while_consul_is_down(
    supervisor: Supervisor, own_consul: ConsulHandle
) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"ID": "kept-1", "Name": "kept", "Address": "127.0.0.1", "Port": 22001}
        async with session.put(f"http://{own_consul.addr}/v1/agent/service/register", json=body) as reply:
            assert reply.status == 200
    watch = CatalogWatch(own_consul.addr, lambda: None, wait=2.0)
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.wait_for(watch.synced.wait(), DEADLINE)
        await until(lambda: [i.service_id for i in watch.current()] == ["kept-1"], "instance read")
        own_consul.child.kill()
        failures_seen = time.monotonic() + 1.0
        while time.monotonic() < failures_seen:
            assert [i.service_id for i in watch.current()] == ["kept-1"]
            await asyncio.sleep(0.05)
        restarted = await asyncio.to_thread(
            start_consul, supervisor, own_consul.child.log_path.parent.parent, own_consul.http_port
        )
        await until(lambda: watch.current() == [], "the restarted (empty) dev agent's catalog is followed")
        assert restarted.http_port == own_consul.http_port
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
