"""The Sidecar kind's inbound part through real sidecars: where the sidecar calls its app (defaultEndpoint) and
the limits on those calls (connectionPool / inboundConnectionPool), changed live by config.

caller app -> caller sidecar -> mTLS -> server sidecar -> app, real sockets, TLS and NATS KV; the server's
inbound config is what pilot generates from a Sidecar (its part is covered by the simulation tests).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.local.processes import free_port
from services.proxy.sidecar import Sidecar
from shared.model.proxy_config import ProxyConfig
from tests.integration.proxy.test_http2_connections import eventually
from tests.integration.proxy.test_mesh_path import outbound_config, outbound_url

pytestmark = pytest.mark.integration


def server_config(server: Sidecar, **inbound: Any) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "proxyId": server.proxy_id,
            "service": server.settings.service,
            "namespace": "default",
            "inbound": {"mtlsMode": "STRICT", **inbound},
        }
    ).versioned()


async def call_slow(session: aiohttp.ClientSession, caller: Sidecar) -> int:
    """A request the app holds until its `hold` is set; the answer's status."""
    async with session.get(outbound_url(caller, "/slow"), headers={"Host": "reviews"}) as reply:
        await reply.read()
        return reply.status


async def connected(make_sidecar: Any, bus: Any, app_port: int, **inbound: Any) -> tuple[Sidecar, Sidecar]:
    server = await make_sidecar("reviews", app_port)
    caller = await make_sidecar("productpage", 1)
    await bus.push(server_config(server, **inbound))
    config = outbound_config(caller, server)
    await bus.push(config)
    await bus.ack(caller.proxy_id, config.version)
    await server.config.applied.wait()
    return caller, server


async def apply(bus: Any, server: Sidecar, config: ProxyConfig) -> None:
    await bus.push(config)
    await eventually(
        lambda: server.state.snapshot is not None and server.state.snapshot.version == config.version,
        f"config {config.version} on the server",
    )


async def test_default_endpoint_sends_the_ports_calls_elsewhere_and_back(
    make_app: Any, make_sidecar: Any, bus: Any
) -> None:
    """The sidecar fronts app port P, where nothing listens; the ingress listener for P names the app's real
    port, and without it the calls go to P again."""
    app = await make_app("reviews")
    declared = free_port()
    moved = {"appPorts": [{"port": declared, "defaultEndpoint": f"127.0.0.1:{app.port}"}]}
    caller, server = await connected(make_sidecar, bus, declared, **moved)
    async with aiohttp.ClientSession() as session:
        async with session.get(outbound_url(caller, "/moved"), headers={"Host": "reviews"}) as reply:
            assert reply.status == 200
            assert reply.headers["x-app"] == "reviews"
        await apply(bus, server, server_config(server))
        async with session.get(outbound_url(caller, "/back"), headers={"Host": "reviews"}) as reply:
            assert reply.status == 503
            assert "local app unreachable" in await reply.text()
    assert [seen["path"] for seen in app.seen] == ["/moved"]


async def test_the_inbound_pool_queues_within_max_connections_and_pending_and_refuses_beyond(
    make_app: Any, make_sidecar: Any, bus: Any
) -> None:
    """maxConnections 1 and http1MaxPendingRequests 1: one call at the app, one waiting, a third 503 UO."""
    app = await make_app("reviews")
    pool = {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}
    caller, server = await connected(make_sidecar, bus, app.port, connectionPool=pool)
    stats = server._inbound.stats
    async with aiohttp.ClientSession() as session:
        calls = [asyncio.create_task(call_slow(session, caller)) for _ in range(3)]
        await eventually(lambda: stats.app_overflow == 1 and len(app.seen) == 1, "one call at the app, one refused")
        assert len(app.seen) == 1  # the pending one waits for the connection the first holds
        app.hold.set()
        async with asyncio.timeout(20):
            statuses = sorted(await asyncio.gather(*calls))
    assert statuses == [200, 200, 503]
    assert len(app.seen) == 2


async def test_without_limits_the_same_calls_all_reach_the_app_at_once(
    make_app: Any, make_sidecar: Any, bus: Any
) -> None:
    app = await make_app("reviews")
    caller, server = await connected(make_sidecar, bus, app.port)
    async with aiohttp.ClientSession() as session:
        calls = [asyncio.create_task(call_slow(session, caller)) for _ in range(3)]
        await eventually(lambda: len(app.seen) == 3, "three calls at the app")
        app.hold.set()
        async with asyncio.timeout(20):
            assert await asyncio.gather(*calls) == [200, 200, 200]
    assert server._inbound.stats.app_overflow == 0


async def app_health(sidecar: Sidecar, port: int) -> tuple[int, str]:
    url = f"http://127.0.0.1:{sidecar.listeners['health'].port}/app-health/{port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as reply:
            return reply.status, await reply.text()


async def test_the_app_health_probe_follows_the_default_endpoint(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app = await make_app("reviews")
    declared = free_port()
    _caller, server = await connected(make_sidecar, bus, declared)
    status, text = await app_health(server, declared)
    assert status == 503 and f"127.0.0.1:{declared}" in text
    await apply(
        bus, server, server_config(server, appPorts=[{"port": declared, "defaultEndpoint": f"[::]:{app.port}"}])
    )
    assert await app_health(server, declared) == (200, "app reachable\n")  # [::] is the instance's 127.0.0.1
    assert (await app_health(server, declared + 1))[0] == 404  # a port the sidecar does not front


async def test_an_app_on_a_unix_socket_is_reached_and_probed(make_sidecar: Any, bus: Any, tmp_path: Path) -> None:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(f"{request.method} {request.path_qs} {len(body)}")
        return web.Response(text="from the socket", headers={"x-app": "unix"})

    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(application, handle_signals=False)
    await runner.setup()
    socket_path = tmp_path / "app.sock"
    await web.UnixSite(runner, str(socket_path)).start()
    try:
        declared = free_port()
        listener = {"port": declared, "defaultEndpoint": f"unix://{socket_path}"}
        caller, server = await connected(make_sidecar, bus, declared, appPorts=[listener])
        async with aiohttp.ClientSession() as session:
            url = outbound_url(caller, "/small?x=1")
            async with session.get(url, headers={"Host": "reviews"}) as reply:
                assert (reply.status, reply.headers["x-app"], await reply.text()) == (200, "unix", "from the socket")
            async with session.post(
                outbound_url(caller, "/big"), data=b"b" * 300_000, headers={"Host": "reviews"}
            ) as reply:
                assert reply.status == 200
        assert seen == ["GET /small?x=1 0", "POST /big 300000"]  # in memory, then streamed through aiohttp's client
        assert await app_health(server, declared) == (200, "app reachable\n")
    finally:
        await runner.cleanup()
