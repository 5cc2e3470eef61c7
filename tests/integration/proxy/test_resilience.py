"""Retries and fault injection on the outbound path, against real upstream sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from services.local.processes import free_port
from services.proxy.sidecar import Sidecar
from shared.model.proxy_config import ProxyConfig
from tests.integration.proxy.catalog_config import apply, catalog_config

pytestmark = pytest.mark.integration

ROUND_ROBIN = {"loadBalancer": {"simple": "ROUND_ROBIN"}}


def config(
    sidecar: Sidecar, ports: list[int], route_extra: dict[str, Any], policy: dict[str, Any] | None = None
) -> ProxyConfig:
    return catalog_config(sidecar, ports, policy, route_extra)


async def statuses(sidecar: Sidecar, count: int, method: str = "GET") -> list[tuple[int, str]]:
    url = f"http://127.0.0.1:{sidecar.listeners['outbound'].port}/items"
    found = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.request(method, url, headers={"Host": "catalog"}, data=None) as reply:
                await reply.read()
                found.append((reply.status, reply.headers.get("x-isthmus-response-flags", "")))
    return found


async def test_5xx_is_retried_on_another_endpoint(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    broken = await make_app("broken")
    broken.fail_with = 503
    healthy = await make_app("healthy")
    sidecar = await make_sidecar("web", 1)

    await apply(bus, config(sidecar, [broken.port, healthy.port], {}, ROUND_ROBIN))
    without = await statuses(sidecar, 4)
    assert sorted(status for status, _ in without) == [200, 200, 503, 503]

    retries = {"retries": {"attempts": 2, "retryOn": "5xx"}}
    await apply(bus, config(sidecar, [broken.port, healthy.port], retries, ROUND_ROBIN))
    assert await statuses(sidecar, 4) == [(200, "")] * 4
    assert len(healthy.seen) == 6
    # Round robin moves on with each pick, retries included: every first try meets the broken endpoint.
    assert [r["headers"]["x-envoy-attempt-count"] for r in broken.seen[2:]] == ["1"] * 4
    assert [r["headers"]["x-envoy-attempt-count"] for r in healthy.seen[2:]] == ["2"] * 4


async def test_connect_failure_is_retried_and_exhaustion_is_flagged(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    healthy = await make_app("healthy")
    closed = free_port()
    sidecar = await make_sidecar("web", 1)
    retries = {"retries": {"attempts": 1, "retryOn": "connect-failure"}}

    await apply(bus, config(sidecar, [closed, healthy.port], retries))
    assert await statuses(sidecar, 4) == [(200, "")] * 4

    await apply(bus, config(sidecar, [closed], retries))
    assert await statuses(sidecar, 1) == [(503, "URX,UF")]


async def test_abort_fault_answers_without_calling_upstream(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app = await make_app("catalog")
    sidecar = await make_sidecar("web", 1)
    fault = {"fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}}}
    await apply(bus, config(sidecar, [app.port], fault))
    assert await statuses(sidecar, 3) == [(418, "FI")] * 3
    assert app.seen == []


async def test_a_streamed_body_is_never_sent_twice(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    broken = await make_app("broken")
    broken.fail_with = 503
    healthy = await make_app("healthy")
    sidecar = await make_sidecar("web", 1)
    retries = {"retries": {"attempts": 2, "retryOn": "5xx"}}
    await apply(bus, config(sidecar, [broken.port, healthy.port], retries, ROUND_ROBIN))
    url = f"http://127.0.0.1:{sidecar.listeners['outbound'].port}/items"

    async def chunks() -> Any:
        for _ in range(4):
            yield b"y" * 1000

    async with aiohttp.ClientSession() as session:
        # Chunked (no Content-Length): streamed once, so the 503 stands.
        async with session.post(url, headers={"Host": "catalog"}, data=chunks()) as reply:
            assert reply.status == 503
        assert [r["body_length"] for r in broken.seen] == [4000] and healthy.seen == []
        # A small body with a length is held and replayed on the retry, intact (round robin: healthy, then
        # broken and its retry on healthy).
        for _ in range(2):
            async with session.post(url, headers={"Host": "catalog"}, data=b"z" * 3000) as reply:
                assert reply.status == 200
    assert [r["body_length"] for r in broken.seen] == [4000, 3000]
    assert [r["body_length"] for r in healthy.seen] == [3000, 3000]
    assert healthy.seen[1]["headers"]["x-envoy-attempt-count"] == "2"


async def test_a_burst_of_mixed_outcomes_leaves_nothing_held(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    """Concurrent requests through kept connections (the immediate path) and new ones (the general path), with
    503s retried, route timeouts and successes mixed: afterwards the cluster holds no request, pending slot,
    retry or endpoint count, so later requests are not refused (UO) for leaked ones."""
    healthy, broken, slow = await make_app("healthy"), await make_app("broken"), await make_app("slow")
    broken.fail_with = 503
    sidecar = await make_sidecar("web", 1)
    route = {"retries": {"attempts": 2, "retryOn": "5xx"}, "timeout": "1s"}
    limits = {"connectionPool": {"http": {"http2MaxRequests": 40}}}
    await apply(bus, config(sidecar, [healthy.port, broken.port, slow.port], route, {**ROUND_ROBIN, **limits}))
    url = f"http://127.0.0.1:{sidecar.listeners['outbound'].port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:

        async def one(index: int) -> int:
            path = "/slow" if index % 5 == 0 else f"/item/{index}"
            async with session.get(f"{url}{path}", headers={"Host": "catalog"}) as reply:
                await reply.read()
                return reply.status

        statuses = await asyncio.gather(*(one(index) for index in range(120)))
    assert set(statuses) <= {200, 503, 504}, statuses
    assert statuses.count(200) > 60  # retries carry most requests past the failing endpoint
    assert 504 in statuses  # /slow on the slow endpoint waits out the route timeout
    (state,) = sidecar.cluster_states().values()
    assert (state["active"], state["pending"], state["retries"]) == (0, 0, 0)
