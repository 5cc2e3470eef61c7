"""The lean upstream client: request serialization, keep-alive reuse, framing, and failures as aiohttp's errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from services.proxy.h1client import LeanPool, LeanResponse, serialize
from services.proxy.tls import TlsContexts
from services.proxy.upstream import DEFAULT_POOL, PoolSettings, UpstreamPools
from shared.model.proxy_config import Endpoint


def test_serialize_adds_host_and_body_length_only_when_needed() -> None:
    head = serialize("GET", "/a?b=1", CIMultiDict({"Host": "svc", "X-A": "1"}), None, "127.0.0.1:80")
    assert head == b"GET /a?b=1 HTTP/1.1\r\nHost: svc\r\nX-A: 1\r\n\r\n"
    posted = serialize("POST", "/", CIMultiDict({"Content-Length": "9"}), b"abc", "h:1")
    assert posted == b"POST / HTTP/1.1\r\nHost: h:1\r\nContent-Length: 3\r\n\r\nabc"
    assert b"Content-Length: 0" in serialize("PUT", "/", CIMultiDict(), None, "h:1")
    with pytest.raises(ValueError):
        serialize("GET", "/", CIMultiDict({"X-Bad": "a\r\nInjected: 1"}), None, "h:1")


@pytest.fixture
async def app_port() -> AsyncIterator[int]:
    seen: list[str] = []

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path_qs} {await request.text()}")
        if request.path == "/chunked":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b"ab")
            await response.write(b"cd")
            await response.write_eof()
            return response
        if request.path == "/close":
            return web.Response(text="bye", headers={"Connection": "close"})
        return web.Response(text=f"hello {len(seen)}")

    server = web.Server(handle, access_log=None)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield port
    await runner.cleanup()


async def _body(pool: LeanPool, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    response = await pool.request(method, path, CIMultiDict({"Host": "app"}), body, None)
    try:
        return response.status, await response.content.read()
    finally:
        response.release()


async def test_keep_alive_reuse_and_framing(app_port: int) -> None:
    pool = LeanPool("127.0.0.1", app_port, None, 2.0, 15.0)
    try:
        assert await _body(pool, "GET", "/x?q=1") == (200, b"hello 1")
        assert len(pool._idle) == 1
        connection = pool._idle[0]
        assert await _body(pool, "POST", "/p", b"data") == (200, b"hello 2")
        assert pool._idle == [connection]
        assert await _body(pool, "GET", "/chunked") == (200, b"abcd")
        status, body = await _body(pool, "HEAD", "/h")
        assert (status, body) == (200, b"")
        assert await _body(pool, "GET", "/close") == (200, b"bye")
        assert pool._idle == [], "a response with Connection: close is not pooled"
    finally:
        pool.close()


async def test_an_idle_connection_the_server_closed_is_replaced(app_port: int) -> None:
    pool = LeanPool("127.0.0.1", app_port, None, 2.0, 15.0)
    try:
        await _body(pool, "GET", "/")
        stale = pool._idle[0]
        assert stale.transport is not None
        stale.transport.close()  # as if the server's idle timeout closed it
        await asyncio.sleep(0)
        assert await _body(pool, "GET", "/again") == (200, b"hello 2")
    finally:
        pool.close()


async def test_connect_failures_are_aiohttp_errors() -> None:
    pool = LeanPool("127.0.0.1", 1, None, 2.0, 15.0)
    with pytest.raises(aiohttp.ClientConnectionError):
        await pool.request("GET", "/", CIMultiDict(), None, None)


async def test_lean_pools_only_without_connection_limits() -> None:
    pools = UpstreamPools(TlsContexts())
    endpoint = Endpoint(address="127.0.0.1", port=8080)
    lean = pools.lean_for(endpoint, DEFAULT_POOL)
    assert lean is not None and pools.lean_for(endpoint, DEFAULT_POOL) is lean
    assert pools.lean_for(endpoint, PoolSettings("c", max_connections=2)) is None
    assert pools.lean_for(endpoint, PoolSettings("c", max_requests_per_connection=5)) is None
    assert pools.lean_for(endpoint, PoolSettings("c", max_connection_duration=60.0)) is None
    await pools.close()
    assert lean.closed


async def test_idle_connections_close_after_the_idle_timeout(app_port: int) -> None:
    """Each pooled connection is closed once idle for idleTimeout; one used again meanwhile stays open."""
    pool = LeanPool("127.0.0.1", app_port, None, 2.0, 0.3)
    try:
        assert (await _body(pool, "GET", "/a"))[0] == 200
        first = pool._idle[0]
        deadline = asyncio.get_running_loop().time() + 10
        while first.transport is not None and not first.transport.is_closing():
            assert asyncio.get_running_loop().time() < deadline, "the idle connection was never closed"
            await asyncio.sleep(0.05)
        assert pool._idle == []
        assert (await _body(pool, "GET", "/b"))[0] == 200
        second = pool._idle[0]
        assert second is not first
        assert (await _body(pool, "GET", "/c"))[0] == 200
        assert pool._idle == [second], "a connection taken and put back is reused"
    finally:
        pool.close()
    assert second.transport is None or second.transport.is_closing()


async def _sent_now(pool: LeanPool, path: str) -> LeanResponse | BaseException | None:
    """`send_now` on the pool; None when it had no idle connection, else what `answered` was given."""
    answered: asyncio.Future[LeanResponse | BaseException] = asyncio.get_running_loop().create_future()
    if not pool.send_now("GET", path, CIMultiDict({"Host": "app"}), None, None, answered.set_result):
        return None
    return await asyncio.wait_for(answered, 5)


async def test_send_now_uses_only_an_idle_connection_and_answers_by_callback(app_port: int) -> None:
    pool = LeanPool("127.0.0.1", app_port, None, 2.0, 15.0)
    try:
        assert await _sent_now(pool, "/cold") is None, "nothing sent without an idle connection"
        assert await _body(pool, "GET", "/warm") == (200, b"hello 1")
        response = await _sent_now(pool, "/now")
        assert isinstance(response, LeanResponse)
        assert response.status == 200 and response.content.is_eof()
        assert response.content.read_nowait(-1) == b"hello 2"
        response.release()
        assert len(pool._idle) == 1, "read to its end: the connection is kept"
    finally:
        pool.close()


class _OneRequestPerConnection(asyncio.Protocol):
    """Answers a connection's first request (keep-alive) and closes it, unanswered, on the next one."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.requests += data.count(b"\r\n\r\n")
        if self.requests == 1:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        else:
            self.transport.close()


async def test_send_now_replaces_a_kept_connection_the_server_closed_unanswered() -> None:
    server = await asyncio.get_running_loop().create_server(_OneRequestPerConnection, "127.0.0.1", 0)
    pool = LeanPool("127.0.0.1", server.sockets[0].getsockname()[1], None, 2.0, 15.0)
    try:
        response = await pool.request("GET", "/a", CIMultiDict({"Host": "app"}), None, None)
        assert await response.content.read() == b"first"
        response.release()
        again = await _sent_now(pool, "/b")
        assert isinstance(again, LeanResponse), again
        assert again.status == 200 and await again.content.read() == b"first", "answered on a new connection"
        again.release()
    finally:
        pool.close()
        server.close()
