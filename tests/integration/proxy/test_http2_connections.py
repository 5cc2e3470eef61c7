"""The HTTP/2 client pool against the HTTP/2 server front, on loopback: multiplexing, idle close, flow control."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from multidict import CIMultiDict

from services.proxy.h2base import READ_LIMIT, STREAM_WINDOW
from services.proxy.h2client import H2Pool
from services.proxy.listeners import Listener, start_listener
from services.proxy.request_view import RequestView

pytestmark = pytest.mark.integration

BIG = 16 * 1024 * 1024


async def eventually(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def h2_app() -> AsyncIterator[Listener]:
    async def handle(request: RequestView) -> web.Response:
        if request.raw_path == "/big":
            return web.Response(body=b"z" * BIG)
        await asyncio.sleep(0.05)  # held open, so concurrent calls overlap
        return web.Response(text=f"HTTP/{request.version.major}")

    listener = await start_listener("app", handle, "127.0.0.1", 0, pass_through=True)
    yield listener
    await listener.close()


@pytest.fixture
async def pool_of(h2_app: Listener) -> AsyncIterator[Callable[..., H2Pool]]:
    pools: list[H2Pool] = []

    def make(idle_timeout: float = 15.0) -> H2Pool:
        pool = H2Pool("127.0.0.1", h2_app.port, None, 5.0, idle_timeout=idle_timeout)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


async def get(pool: H2Pool, path: str = "/") -> bytes:
    response = await pool.request("GET", path, CIMultiDict({"Host": "app"}), None, None)
    try:
        assert response.status == 200
        return await response.content.read()
    finally:
        response.release()


async def test_concurrent_requests_share_one_connection(h2_app: Listener, pool_of: Callable[..., H2Pool]) -> None:
    pool = pool_of()
    answers = await asyncio.gather(*(get(pool) for _ in range(50)))
    assert answers == [b"HTTP/2"] * 50
    assert h2_app.open_connections() == 1


async def test_an_idle_connection_is_closed_and_a_new_one_made_on_demand(
    h2_app: Listener, pool_of: Callable[..., H2Pool]
) -> None:
    pool = pool_of(idle_timeout=0.2)
    assert await get(pool) == b"HTTP/2"
    await eventually(lambda: h2_app.open_connections() == 0, "the idle connection to close")
    assert await get(pool) == b"HTTP/2"


async def test_a_reader_that_stops_stops_the_sender_within_the_windows(
    h2_app: Listener, pool_of: Callable[..., H2Pool]
) -> None:
    pool = pool_of()
    response = await pool.request("GET", "/big", CIMultiDict({"Host": "app"}), None, None)
    try:
        content = response.content
        # Nothing is read: once the stream's window is used up, nothing more may arrive. The pause gives a
        # sender that ignored the window time to overshoot; a correct one cannot, however slow the machine.
        await eventually(lambda: content.total_bytes >= STREAM_WINDOW, "the first window's worth")
        await asyncio.sleep(0.3)
        assert STREAM_WINDOW <= content.total_bytes <= STREAM_WINDOW + 2 * READ_LIMIT + 16 * 1024
        assert len(await content.read()) == BIG  # reading resumes the flow to the end
    finally:
        response.release()


async def test_a_connection_the_server_closes_is_replaced_for_the_next_request(
    h2_app: Listener, pool_of: Callable[..., H2Pool]
) -> None:
    pool = pool_of()
    assert await get(pool) == b"HTTP/2"
    assert h2_app.front is not None
    for connection in list(h2_app.front.connections):  # the server goes away (GOAWAY, then close)
        connection._close()
    await eventually(lambda: pool.open_connections == 0, "the client to see its connection closed")
    assert await get(pool) == b"HTTP/2"
    assert pool.open_connections == 1


async def test_max_concurrent_streams_opens_more_connections(h2_app: Listener) -> None:
    """DestinationRule connectionPool.http.maxConcurrentStreams: 5 in flight per connection, 20 calls at once."""
    pool = H2Pool("127.0.0.1", h2_app.port, None, 5.0, max_streams=5)
    try:
        assert await asyncio.gather(*(get(pool) for _ in range(20))) == [b"HTTP/2"] * 20
        assert pool.open_connections == 4
        assert h2_app.open_connections() == 4
    finally:
        pool.close()
