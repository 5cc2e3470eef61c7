"""Pilot as a fleet member against real NATS and Consul: two pilot processes agree without churn, gone proxies'
keys are deleted after the grace period, convergence is measured from the proxies' ACKs."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from services.local.processes import free_port
from services.pilot.app import Pilot, PilotSettings, open_bucket
from services.pilot.gc import ProxyKeyCollector
from services.pilot.metrics import PilotMetrics
from services.pilot.snapshot import Snapshot
from services.pilot.testing import meshed
from shared.bus.codec import Ack
from shared.bus.names import CONFIG_BUCKET, PROXY_CONFIG_BUCKET, PROXY_STATUS_BUCKET, config_key, proxy_key
from shared.clock import FakeClock
from shared.model.proxy_config import ProxyConfig
from tests.integration.pilot.support import DEADLINE, Catalog, eventually, mesh_meta

pytestmark = pytest.mark.integration


class Writes:
    """Every version written to one key while the test runs (a live watch sees each write, not only the last)."""

    def __init__(self) -> None:
        self.versions: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, kv: KeyValue, key: str) -> None:
        watcher = await kv.watch(key)

        async def follow() -> None:
            try:
                async for entry in watcher:
                    if entry is not None and entry.operation is None and entry.value:
                        self.versions.append(str(json.loads(entry.value)["version"]))
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]

        self._task = asyncio.create_task(follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def debug_versions(session: aiohttp.ClientSession, port: int) -> dict[str, str]:
    try:
        async with session.get(f"http://127.0.0.1:{port}/debug/proxies") as reply:
            body = await reply.json()
    except aiohttp.ClientError:
        return {}
    return {item["proxyId"]: item["version"] for item in body["proxies"]}


async def test_two_pilot_processes_write_each_version_once(
    nats_url: str, consul_addr: str, bus: NATS, catalog: Catalog
) -> None:
    tag = uuid.uuid4().hex[:8]
    proxy_id = f"fleet-{tag}-1"
    js = bus.jetstream()
    writes = Writes()
    await writes.start(await open_bucket(js, PROXY_CONFIG_BUCKET), proxy_key(proxy_id))
    await catalog.register(f"fleet-{tag}", proxy_id, 22001, mesh_meta(proxy_id, f"fleet-{tag}"))
    ports = [free_port(), free_port()]
    argv = [sys.executable, "-m", "services.pilot", "--nats-url", nats_url, "--consul-addr", consul_addr]
    processes = [
        await asyncio.create_subprocess_exec(*argv, "--listen", f"127.0.0.1:{port}", stderr=asyncio.subprocess.DEVNULL)
        for port in ports
    ]
    try:
        async with aiohttp.ClientSession() as session:

            async def agreed(previous: str = "") -> str | None:
                seen = [(await debug_versions(session, port)).get(proxy_id) for port in ports]
                return seen[0] if seen[0] and seen[0] != previous and seen[0] == seen[1] else None

            first = await eventually(agreed, "both pilots generate the proxy's config")
            config = await open_bucket(js, CONFIG_BUCKET)
            rule = {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": f"fleet-{tag}", "namespace": f"fleet-{tag}"},
                "spec": {"host": f"fleet-{tag}", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}},
            }
            await config.put(config_key("DestinationRule", f"fleet-{tag}", f"fleet-{tag}"), json.dumps(rule).encode())
            second = await eventually(lambda: agreed(first), "both pilots generate the changed config")

            async def written(version: str) -> bool:
                return bool(writes.versions) and writes.versions[-1] == version

            await eventually(lambda: written(second), "the new version is stored")
            await config.delete(config_key("DestinationRule", f"fleet-{tag}", f"fleet-{tag}"))
            third = await eventually(lambda: agreed(second), "both pilots follow the delete")
            assert third == first  # same input, same output
            await eventually(lambda: written(first), "the first version is stored again")
            await asyncio.sleep(0.5)  # room for a duplicate write to show up (there must be none)
            assert writes.versions == [first, second, first]
    finally:
        await writes.stop()
        for process in processes:
            process.terminate()
        await asyncio.gather(*(asyncio.wait_for(p.wait(), DEADLINE) for p in processes))


async def test_keys_of_a_gone_proxy_are_deleted_after_the_grace_period(bus: NATS) -> None:
    js = bus.jetstream()
    tag = uuid.uuid4().hex[:8]
    configs = await js.create_key_value(bucket=f"gc_config_{tag}")
    statuses = await js.create_key_value(bucket=f"gc_status_{tag}")
    clock, deleted = FakeClock(), list[str]()
    collector = ProxyKeyCollector(configs, [statuses], PilotMetrics(), [deleted.append], grace=60, clock=clock)
    here, gone = meshed("a", "10.0.0.1"), meshed("b", "10.0.0.2")
    try:
        for instance in (here, gone):
            await configs.put(proxy_key(instance.proxy_id), b"{}")
            await statuses.put(proxy_key(instance.proxy_id), b"{}")
        assert await collector.collect(Snapshot.build([], [here, gone])) == []
        assert await collector.collect(Snapshot.build([], [here])) == []  # missing since now
        await clock.advance(59)
        assert await collector.collect(Snapshot.build([], [here])) == []
        await clock.advance(1)
        assert await collector.collect(Snapshot.build([], [here])) == [proxy_key(gone.proxy_id)]
        assert deleted == [proxy_key(gone.proxy_id)]
        assert sorted(await configs.keys()) == sorted(await statuses.keys()) == [proxy_key(here.proxy_id)]
        # back before the grace period ends: the clock starts again when it disappears again
        assert await collector.collect(Snapshot.build([], [])) == []
        await clock.advance(30)
        assert await collector.collect(Snapshot.build([], [here])) == []
        await clock.advance(45)
        assert await collector.collect(Snapshot.build([], [])) == []
    finally:
        await js.delete_key_value(f"gc_config_{tag}")
        await js.delete_key_value(f"gc_status_{tag}")


@pytest.fixture
async def pilot(nats_url: str, consul_addr: str) -> AsyncIterator[Pilot]:
    settings = PilotSettings(
        nats_url=nats_url, consul_addr=consul_addr, listen="127.0.0.1:0", consul_wait=5.0, quiet=0.05, proxy_grace=1.0
    )
    running = Pilot(settings)
    await running.start()
    await asyncio.wait_for(running.ready.wait(), DEADLINE)
    yield running
    await running.stop()


async def test_acks_are_measured_and_a_deregistered_proxy_is_forgotten(
    pilot: Pilot, bus: NATS, catalog: Catalog
) -> None:
    tag = uuid.uuid4().hex[:8]
    proxy_id = f"conv-{tag}-1"
    js = bus.jetstream()
    proxies = await open_bucket(js, PROXY_CONFIG_BUCKET)
    statuses = await open_bucket(js, PROXY_STATUS_BUCKET)
    metric = "pilot_proxy_convergence_seconds_count"
    before = pilot.metrics.registry.get_sample_value(metric) or 0.0
    await catalog.register(f"conv-{tag}", proxy_id, 22002, mesh_meta(proxy_id, f"conv-{tag}"))

    async def sent() -> ProxyConfig | None:
        try:
            return ProxyConfig.from_json((await proxies.get(proxy_key(proxy_id))).value or b"")
        except (KeyNotFoundError, KeyDeletedError):
            return None

    config = await eventually(sent, "pilot writes the proxy's config")
    ack = Ack(proxy_id=proxy_id, version=config.version, accepted=True, applied_version=config.version)
    await statuses.put(proxy_key(proxy_id), ack.to_json())

    async def measured() -> bool:
        return (pilot.metrics.registry.get_sample_value(metric) or 0.0) > before

    await eventually(measured, "the ACK is measured as convergence")
    nack = Ack(proxy_id=proxy_id, version="x", accepted=False, error="bad", applied_version=config.version)
    await statuses.put(proxy_key(proxy_id), nack.to_json())
    await eventually(
        lambda: asyncio.sleep(0, (pilot.metrics.registry.get_sample_value("pilot_proxy_nacks_total") or 0) >= 1),
        "the NACK is counted",
    )

    await catalog.deregister(proxy_id)
    catalog.registered.remove(proxy_id)

    async def forgotten() -> bool:
        return await _absent(proxies, proxy_key(proxy_id)) and await _absent(statuses, proxy_key(proxy_id))

    await eventually(forgotten, "the gone proxy's keys are deleted after the grace period")


async def _absent(kv: KeyValue, key: str) -> bool:
    try:
        await kv.get(key)
    except (KeyNotFoundError, KeyDeletedError):
        return True
    return False
