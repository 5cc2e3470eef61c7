"""The proxy's config follow against real NATS: a subscription plus direct gets, no JetStream consumer per proxy."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient

from services.proxy.config_watch import ConfigWatcher
from services.proxy.kv import ensure_bucket
from services.proxy.snapshot import ProxyState
from shared.bus.codec import Ack
from shared.bus.names import PROXY_CONFIG_BUCKET, PROXY_STATUS_BUCKET, proxy_key
from shared.clock import SYSTEM_CLOCK
from shared.model.proxy_config import ProxyConfig

pytestmark = pytest.mark.integration

DEADLINE = 15.0


def config(proxy_id: str, host: str) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "proxyId": proxy_id,
            "service": "s",
            "namespace": "default",
            "virtualHosts": [{"name": host, "domains": [host], "routes": [{"route": [{"cluster": host}]}]}],
            "clusters": [{"name": host, "host": host, "port": 80}],
        }
    ).versioned()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


async def acked(nc: NatsClient, key: str, version: str) -> None:
    status = await ensure_bucket(nc.jetstream(), PROXY_STATUS_BUCKET)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            if Ack.from_json((await status.get(key)).value or b"").version == version:
                return
        except nats.js.errors.KeyNotFoundError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"no ACK of {version} within {DEADLINE}s")


async def test_updates_arrive_without_a_consumer_per_proxy(nc: NatsClient, tmp_path: Path) -> None:
    js = nc.jetstream()
    configs = await ensure_bucket(js, PROXY_CONFIG_BUCKET)
    proxy_id = f"watch-{uuid.uuid4().hex[:8]}"
    first = config(proxy_id, "a")
    await configs.put(proxy_key(proxy_id), first.to_json())  # before the proxy starts: read at start
    consumers = (await js.stream_info(f"KV_{PROXY_CONFIG_BUCKET}")).state.consumer_count
    state = ProxyState()
    watcher = ConfigWatcher(proxy_id, state, tmp_path, SYSTEM_CLOCK, random.Random(1))
    task = asyncio.create_task(watcher.run(js, nc))
    try:
        await acked(nc, proxy_key(proxy_id), first.version)
        assert (await js.stream_info(f"KV_{PROXY_CONFIG_BUCKET}")).state.consumer_count == consumers
        second = config(proxy_id, "b")
        await configs.put(proxy_key(proxy_id), second.to_json())
        await acked(nc, proxy_key(proxy_id), second.version)
        assert state.snapshot is not None and state.snapshot.version == second.version
        await configs.delete(proxy_key(proxy_id))  # a delete keeps the running config
        await watcher.resync()
        await asyncio.sleep(0.2)
        assert state.snapshot.version == second.version
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
