"""The local mesh's infrastructure: a restart forgets the previous run's proxies, never the applied config."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import nats.js.errors
import pytest

from services.local.infra import forget_earlier_proxies, start_nats
from services.local.processes import Supervisor
from shared.bus.names import CONFIG_BUCKET, PROXY_CONFIG_BUCKET, PROXY_STATUS_BUCKET

pytestmark = pytest.mark.integration


async def _put(url: str, bucket: str, key: str) -> None:
    client = await nats.connect(url)
    try:
        kv = await client.jetstream().create_key_value(bucket=bucket)
        await kv.put(key, b"{}")
    finally:
        await client.close()


async def _has(url: str, bucket: str, key: str) -> bool:
    client = await nats.connect(url)
    try:
        kv = await client.jetstream().key_value(bucket)
        return (await kv.get(key)).value == b"{}"
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError):
        return False
    finally:
        await client.close()


def test_proxy_buckets_are_emptied_and_the_config_kept(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    try:
        url = start_nats(supervisor, tmp_path).url
        for bucket in (PROXY_CONFIG_BUCKET, PROXY_STATUS_BUCKET, CONFIG_BUCKET):
            asyncio.run(_put(url, bucket, "earlier"))
        forget_earlier_proxies(url)
        assert not asyncio.run(_has(url, PROXY_CONFIG_BUCKET, "earlier"))
        assert not asyncio.run(_has(url, PROXY_STATUS_BUCKET, "earlier"))
        assert asyncio.run(_has(url, CONFIG_BUCKET, "earlier"))
        forget_earlier_proxies(url)  # nothing left to delete: no error
    finally:
        supervisor.stop_all()
