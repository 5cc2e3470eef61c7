"""The benchmark's floor proxy relays requests and responses intact over kept connections, without hop-by-hop
headers, so its numbers measure a working pass-through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bench.bare_proxy import start
from bench.upstream import BODY, _Serve


async def _port_of(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


async def _slowly(body: bytes) -> AsyncIterator[bytes]:
    """A chunked upload sent in two parts, 50 ms apart (a body arriving after its head)."""
    yield body[:1000]
    await asyncio.sleep(0.05)  # not a timing assertion: a correct proxy passes however the parts arrive
    yield body[1000:]


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen = {name.lower(): value for name, value in request.headers.items()}
        return web.json_response(
            {"method": request.method, "path": request.path_qs, "headers": seen, "body": len(body)}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    yield port
    await runner.cleanup()


async def test_the_bench_upstreams_answers_come_back_whole_on_one_kept_connection() -> None:
    loop = asyncio.get_running_loop()
    accepted: list[_Serve] = []

    def serve() -> _Serve:
        accepted.append(_Serve())
        return accepted[-1]

    upstream = await loop.create_server(serve, "127.0.0.1", 0)
    proxy = await start("127.0.0.1", 0, "127.0.0.1", await _port_of(upstream))
    try:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(5):
                async with session.get(f"http://127.0.0.1:{await _port_of(proxy)}/") as response:
                    assert response.status == 200
                    assert await response.read() == BODY
                    assert "Connection" not in response.headers  # the upstream's keep-alive is hop-by-hop
        assert len(accepted) == 1  # one client connection, kept: one upstream connection for all five
    finally:
        proxy.close()
        upstream.close()


async def test_requests_reach_the_upstream_with_their_body_and_without_hop_by_hop_headers(echo_port: int) -> None:
    proxy = await start("127.0.0.1", 0, "127.0.0.1", echo_port)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{await _port_of(proxy)}/orders?id=7"
            headers = {"X-Custom": "kept", "Keep-Alive": "timeout=5", "Proxy-Connection": "keep-alive"}
            async with session.post(url, data=_slowly(b"y" * 3000), headers=headers) as response:
                assert response.status == 200
                seen = await response.json()
        assert seen["method"] == "POST" and seen["path"] == "/orders?id=7" and seen["body"] == 3000
        assert seen["headers"]["x-custom"] == "kept"
        assert "keep-alive" not in seen["headers"] and "proxy-connection" not in seen["headers"]
    finally:
        proxy.close()
