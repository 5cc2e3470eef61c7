"""The catalog watch above its per-service watch limit, against a real Consul agent: bulk reads follow
registrations, deregistrations and check states with two long polls."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import aiohttp
import pytest

from services.pilot.catalog_watch import CatalogWatch

pytestmark = pytest.mark.integration

DEADLINE = 20.0


async def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {DEADLINE}s: {what}")


async def test_bulk_mode_follows_instances_and_health(consul_addr: str) -> None:
    tag = uuid.uuid4().hex[:8]
    names = [f"bulk-{tag}-{i}" for i in range(3)]
    base = f"http://{consul_addr}/v1/agent"
    changes: list[int] = []
    watch = CatalogWatch(consul_addr, lambda: changes.append(1), wait=2.0, watch_limit=1, refresh_width=2)
    async with aiohttp.ClientSession() as session:

        async def put(path: str, body: object = None) -> None:
            async with session.put(f"{base}{path}", json=body) as reply:
                assert reply.status == 200, await reply.text()

        for i, name in enumerate(names):
            check = {"CheckID": f"{name}-ttl", "TTL": "60s", "Status": "passing"}
            await put("/service/register", {"ID": f"{name}-1", "Name": name, "Address": "127.0.0.1",
                                            "Port": 23000 + i, "Check": check})  # fmt: skip
        task = asyncio.create_task(watch.run())
        try:
            await asyncio.wait_for(watch.synced.wait(), DEADLINE)

            def ours() -> dict[str, bool]:
                return {i.service: i.healthy for i in watch.current() if i.service in names}

            assert ours() == dict.fromkeys(names, True)
            assert watch._bulk_names is not None  # more services than the limit: bulk mode

            await put(f"/check/fail/{names[0]}-ttl")
            await eventually(lambda: ours().get(names[0]) is False, "a failing check is seen")
            await put(f"/service/deregister/{names[1]}-1")
            await eventually(lambda: names[1] not in ours(), "a deregistered service disappears")
            assert changes, "changes after sync are announced"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for name in names:
                async with session.put(f"{base}/service/deregister/{name}-1") as reply:
                    await reply.read()
