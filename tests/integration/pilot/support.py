"""Helpers of the pilot integration tests: polling with a deadline, and instances registered in a real Consul."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

from shared.consul import META_MESH, META_NAMESPACE, META_PROXY_ID, META_SERVICE_ACCOUNT, META_VERSION

DEADLINE = 15.0
T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        result = await probe()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {DEADLINE}s: {what}")


class Catalog:
    """Registers instances through the local Consul agent's API, and removes them afterwards."""

    def __init__(self, session: aiohttp.ClientSession, addr: str) -> None:
        self._session = session
        self._base = f"http://{addr}/v1/agent/service"
        self.registered: list[str] = []

    async def register(
        self, service: str, service_id: str, port: int, meta: dict[str, str] | None = None, weight: int | None = None
    ) -> None:
        body: dict[str, object] = {"ID": service_id, "Name": service, "Address": "127.0.0.1", "Port": port}
        body["Meta"] = meta or {}
        if weight is not None:
            body["Weights"] = {"Passing": weight, "Warning": 1}
        async with self._session.put(f"{self._base}/register", json=body) as reply:
            assert reply.status == 200, await reply.text()
        self.registered.append(service_id)

    async def deregister(self, service_id: str) -> None:
        async with self._session.put(f"{self._base}/deregister/{service_id}") as reply:
            assert reply.status == 200, await reply.text()


def mesh_meta(proxy_id: str, namespace: str, version: str = "v1") -> dict[str, str]:
    return {
        META_MESH: "true",
        META_PROXY_ID: proxy_id,
        META_NAMESPACE: namespace,
        META_SERVICE_ACCOUNT: "sa",
        META_VERSION: version,
    }
