"""DestinationRule traffic policy through a real sidecar: overflow (UO), ejection, per-connection limits, hashing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.local.processes import free_port
from services.proxy.sidecar import Sidecar
from shared.model.proxy_config import ProxyConfig
from tests.integration.proxy.catalog_config import apply, catalog_config

pytestmark = pytest.mark.integration


def config(
    sidecar: Sidecar, ports: list[int], policy: dict[str, Any], route_extra: dict[str, Any] | None = None
) -> ProxyConfig:
    return catalog_config(sidecar, ports, policy, route_extra)


async def call(
    session: aiohttp.ClientSession, sidecar: Sidecar, path: str = "/items", headers: dict[str, str] | None = None
) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{sidecar.listeners['outbound'].port}{path}"
    async with session.get(url, headers={"Host": "catalog", **(headers or {})}) as reply:
        body = await reply.text()
        return reply.status, reply.headers.get("x-isthmus-response-flags", ""), body


async def test_requests_beyond_the_pool_overflow_at_once_with_uo(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app = await make_app("catalog")
    sidecar = await make_sidecar("web", 1)
    await apply(bus, config(sidecar, [app.port], {"connectionPool": {"http": {"http2MaxRequests": 2}}}))
    async with aiohttp.ClientSession() as session:
        held = [asyncio.create_task(call(session, sidecar, "/slow")) for _ in range(2)]
        await bus.eventually(lambda: _true(len(app.seen) == 2), 10.0, "two requests in flight at the app")
        status, flag, _ = await call(session, sidecar)
        assert (status, flag) == (503, "UO")
        app.hold.set()
        assert [(s, f) for s, f, _ in await asyncio.gather(*held)] == [(200, "")] * 2
        assert (await call(session, sidecar))[:2] == (200, "")
    assert len(app.seen) == 3


async def test_failing_endpoint_is_ejected(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    broken = await make_app("broken")
    broken.fail_with = 503
    healthy = await make_app("healthy")
    sidecar = await make_sidecar("web", 1)
    policy = {
        "loadBalancer": {"simple": "ROUND_ROBIN"},
        "outlierDetection": {"consecutive5xxErrors": 2, "baseEjectionTime": "300s"},
    }
    await apply(bus, config(sidecar, [broken.port, healthy.port], policy))
    async with aiohttp.ClientSession() as session:
        statuses = [(await call(session, sidecar))[0] for _ in range(12)]
    assert statuses[:4] == [503, 200, 503, 200]
    assert statuses[4:] == [200] * 8
    assert len(broken.seen) == 2


@pytest.fixture
async def peer_port_app() -> AsyncIterator[int]:
    """Answers with the client port of the connection the request came on."""

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return web.Response(text=str(peer[1] if peer else 0))

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


@pytest.mark.parametrize(("per_connection", "connections"), [(None, 1), (1, 6), (2, 3)])
async def test_max_requests_per_connection(
    peer_port_app: int, make_sidecar: Any, bus: Any, per_connection: int | None, connections: int
) -> None:
    sidecar = await make_sidecar("web", 1)
    http = {"maxRequestsPerConnection": per_connection} if per_connection else {}
    await apply(bus, config(sidecar, [peer_port_app], {"connectionPool": {"http": http}}))
    async with aiohttp.ClientSession() as session:
        peers = [(await call(session, sidecar))[2] for _ in range(6)]
    assert len(set(peers)) == connections, peers


async def test_consistent_hash_keeps_each_user_on_one_endpoint(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    apps = [await make_app(f"catalog-{i}") for i in range(3)]
    sidecar = await make_sidecar("web", 1)
    policy = {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}
    await apply(bus, config(sidecar, [app.port for app in apps], policy))
    homes: dict[str, set[str]] = {}
    async with aiohttp.ClientSession() as session:
        for user in [f"user-{i}" for i in range(12)] * 3:
            url = f"http://127.0.0.1:{sidecar.listeners['outbound'].port}/"
            async with session.get(url, headers={"Host": "catalog", "x-user": user}) as reply:
                homes.setdefault(user, set()).add(reply.headers["x-app"])
    assert all(len(seen) == 1 for seen in homes.values()), homes
    assert len(set().union(*homes.values())) > 1


async def _true(value: bool) -> bool:
    return value


async def test_max_retries_zero_turns_retries_off(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    broken = await make_app("broken")
    broken.fail_with = 503
    healthy = await make_app("healthy")
    sidecar = await make_sidecar("web", 1)
    retries = {"retries": {"attempts": 3, "retryOn": "5xx"}}
    policy = {"loadBalancer": {"simple": "ROUND_ROBIN"}, "connectionPool": {"http": {"maxRetries": 0}}}
    await apply(bus, config(sidecar, [broken.port, healthy.port], policy, retries))
    async with aiohttp.ClientSession() as session:
        statuses = sorted([(await call(session, sidecar))[0] for _ in range(4)])
    assert statuses == [200, 200, 503, 503]
    assert len(broken.seen) == 2 and len(healthy.seen) == 2


async def test_affinity_cookie_is_generated_and_then_followed(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    apps = [await make_app(f"catalog-{i}") for i in range(3)]
    sidecar = await make_sidecar("web", 1)
    policy = {"loadBalancer": {"consistentHash": {"httpCookie": {"name": "affinity", "path": "/", "ttl": "3600s"}}}}
    await apply(bus, config(sidecar, [app.port for app in apps], policy))
    url = f"http://127.0.0.1:{sidecar.listeners['outbound'].port}/"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        async with session.get(url, headers={"Host": "catalog"}) as reply:
            home = reply.headers["x-app"]
            set_cookie = reply.headers["Set-Cookie"]
        assert set_cookie.startswith("affinity=") and "Max-Age=3600" in set_cookie
        cookie = set_cookie.split(";")[0]
        for _ in range(10):
            async with session.get(url, headers={"Host": "catalog", "Cookie": cookie}) as reply:
                assert reply.headers["x-app"] == home
                assert "Set-Cookie" not in reply.headers


async def test_ejected_endpoint_comes_back_after_the_ejection_time(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    flaky = await make_app("flaky")
    flaky.fail_with = 502
    steady = await make_app("steady")
    sidecar = await make_sidecar("web", 1)
    policy = {
        "loadBalancer": {"simple": "ROUND_ROBIN"},
        "outlierDetection": {"consecutiveGatewayErrors": 1, "interval": "1s", "baseEjectionTime": "2s"},
    }
    await apply(bus, config(sidecar, [flaky.port, steady.port], policy))
    async with aiohttp.ClientSession() as session:
        first = [(await call(session, sidecar))[0] for _ in range(3)]
        assert first == [502, 200, 200]  # ejected: round robin skips it
        assert len(flaky.seen) == 1
        flaky.fail_with = None

        async def flaky_serves_again() -> bool:
            return (await call(session, sidecar))[0] == 200 and len(flaky.seen) > 1

        await bus.eventually(flaky_serves_again, 20.0, "the ejected endpoint back in rotation")


async def test_connect_timeout_gives_503_uf(make_sidecar: Any, bus: Any) -> None:
    # A listener whose accept queue is full and never drained: further SYNs are dropped, connects hang.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        sidecar = await make_sidecar("web", 1)
        policy = {"connectionPool": {"tcp": {"connectTimeout": "200ms"}}}
        await apply(bus, config(sidecar, [port], policy, {"timeout": "30s"}))
        async with aiohttp.ClientSession() as session:
            status, flag, body = await call(session, sidecar)
        assert (status, flag) == (503, "UF"), body
    finally:
        for sock in [*fillers, listener]:
            sock.close()


async def test_endpoint_weights_share_traffic_through_a_sidecar(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    heavy, light = await make_app("heavy"), await make_app("light")
    sidecar = await make_sidecar("web", 1)
    round_robin = {"loadBalancer": {"simple": "ROUND_ROBIN"}}
    await apply(bus, catalog_config(sidecar, [heavy.port, light.port], round_robin, weights=[3, 1]))
    async with aiohttp.ClientSession() as session:
        for _ in range(8):
            assert (await call(session, sidecar))[0] == 200
    assert (len(heavy.seen), len(light.seen)) == (6, 2)


async def test_a_retry_budget_replaces_max_retries(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    """maxRetries 0 alone turns retries off (above); a retryBudget, whose floor allows a retry, turns them on."""
    broken = await make_app("broken")
    broken.fail_with = 503
    healthy = await make_app("healthy")
    sidecar = await make_sidecar("web", 1)
    retries = {"retries": {"attempts": 3, "retryOn": "5xx"}}
    pool = {"loadBalancer": {"simple": "ROUND_ROBIN"}, "connectionPool": {"http": {"maxRetries": 0}}}
    budget = {**pool, "retryBudget": {"percent": 20, "minRetryConcurrency": 1}}
    await apply(bus, config(sidecar, [broken.port, healthy.port], budget, retries))
    async with aiohttp.ClientSession() as session:
        assert [(await call(session, sidecar))[0] for _ in range(4)] == [200, 200, 200, 200]
    none = {**pool, "retryBudget": {"percent": 0, "minRetryConcurrency": 0}}
    await apply(bus, config(sidecar, [broken.port, healthy.port], none, retries))
    async with aiohttp.ClientSession() as session:
        assert sorted([(await call(session, sidecar))[0] for _ in range(4)]) == [200, 200, 503, 503]


async def test_retries_go_back_to_the_same_endpoint_when_previous_hosts_are_not_ignored(
    make_app: Any, make_sidecar: Any, bus: Any
) -> None:
    """Consistent hashing sends a user's every try to its home endpoint; by default a retry leaves the endpoint
    already tried, with retryIgnorePreviousHosts false it does not."""
    broken = await make_app("broken")
    broken.fail_with = 503
    healthy = await make_app("healthy")
    sidecar = await make_sidecar("web", 1)
    policy = {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}
    users = [f"user-{i}" for i in range(12)]

    async def statuses(retries: dict[str, Any]) -> dict[str, int]:
        await apply(bus, config(sidecar, [broken.port, healthy.port], policy, {"retries": retries}))
        async with aiohttp.ClientSession() as session:
            return {user: (await call(session, sidecar, headers={"x-user": user}))[0] for user in users}

    assert set((await statuses({"attempts": 2, "retryOn": "5xx"})).values()) == {200}
    homed_on_broken = len({seen["headers"]["x-user"] for seen in broken.seen})
    assert 0 < homed_on_broken < len(users)
    broken.seen.clear()
    same = await statuses({"attempts": 2, "retryOn": "5xx", "retryIgnorePreviousHosts": False})
    failed = [user for user, status in same.items() if status == 503]
    assert len(failed) == homed_on_broken  # each of them tried its home three times
    assert sorted(seen["headers"]["x-user"] for seen in broken.seen) == sorted(failed * 3)
