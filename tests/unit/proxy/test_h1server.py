"""The pass-through front: common requests served below aiohttp's objects, everything else handed to aiohttp."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from multidict import CIMultiDict

from services.proxy.h1server import FastRequest
from services.proxy.listeners import Listener, start_listener
from services.proxy.request_view import Done, Reply, RequestView

Seen = list[tuple[str, str, str, bytes]]
CUT: list[asyncio.Event] = []
"""Set when a relay stops because its caller left."""
IN_FLIGHT: list[asyncio.Event] = []
"""Set when the immediate handler leaves a request in flight."""


@pytest.fixture
async def served() -> AsyncIterator[tuple[Listener, Seen]]:
    seen: Seen = []

    async def handle(request: RequestView) -> Reply:
        body = await request.read() if request.body_exists else b""
        front = "fast" if isinstance(request, FastRequest) else "aiohttp"
        seen.append((front, request.method, request.raw_path, body))
        if request.raw_path == "/stream" and isinstance(request, FastRequest):
            content = _reader()
            content.feed_data(b"ab")
            asyncio.get_running_loop().call_later(0.01, _finish, content)
            return await request.send(200, "OK", CIMultiDict(), content)
        if request.raw_path == "/endless" and isinstance(request, FastRequest):
            endless = _reader()
            endless.feed_data(b"x" * 1024)
            feeding = asyncio.get_running_loop().call_later(0.05, endless.feed_data, b"y" * 1024)
            try:
                return await request.send(200, "OK", CIMultiDict(), endless)
            except ConnectionResetError:
                for event in CUT:
                    event.set()
                raise
            finally:
                feeding.cancel()
        if request.raw_path == "/relayed" and isinstance(request, FastRequest):
            whole = _reader()
            whole.feed_data(b"relayed")
            whole.feed_eof()
            return await request.send(201, None, CIMultiDict({"X-Up": "1"}), whole)
        return web.Response(status=200, text=f"{front} {request.raw_path} {len(body)}", headers={"X-Seen": front})

    listener = await start_listener("test", handle, "127.0.0.1", 0, pass_through=True)
    try:
        yield listener, seen
    finally:
        await listener.close()


def _reader() -> aiohttp.StreamReader:
    loop = asyncio.get_running_loop()
    upstream = BaseProtocol(loop)
    upstream.transport = asyncio.Transport()  # a connected upstream as far as the reader asks
    return aiohttp.StreamReader(upstream, 2**16, loop=loop)


def _finish(content: aiohttp.StreamReader) -> None:
    content.feed_data(b"cd")
    content.feed_eof()


async def _exchange(port: int, raw: bytes, until: bytes, count: int = 1) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = b""
    try:
        async with asyncio.timeout(5):
            while data.count(until) < count:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
    finally:
        writer.close()
    return data


async def test_pipelined_keep_alive_requests_are_answered_in_order_by_the_fast_front(
    served: tuple[Listener, Seen],
) -> None:
    listener, seen = served
    raw = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    data = await _exchange(listener.port, raw, b"fast /b 3")
    assert data.index(b"fast /a 0") < data.index(b"fast /b 3")
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert b"Content-Length: 9\r\n" in data and b"Server: " in data and b"Date: " in data
    assert seen == [("fast", "GET", "/a", b""), ("fast", "POST", "/b", b"abc")]


async def test_a_body_split_across_segments_is_waited_for(served: tuple[Listener, Seen]) -> None:
    listener, seen = served
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
    await writer.drain()
    await asyncio.sleep(0.02)
    writer.write(b"def")
    response = await asyncio.wait_for(reader.readuntil(b"fast /p 6"), 5)
    writer.close()
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert seen == [("fast", "PUT", "/p", b"abcdef")]


async def test_what_the_fast_front_does_not_take_goes_to_aiohttp_on_the_same_connection(
    served: tuple[Listener, Seen],
) -> None:
    listener, seen = served
    chunked = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n"
    data = await _exchange(listener.port, b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" + chunked, b"aiohttp /c 3")
    assert b"fast /first 0" in data
    assert seen == [("fast", "GET", "/first", b""), ("aiohttp", "POST", "/c", b"xyz")]
    old = await _exchange(listener.port, b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n", b"aiohttp /old 0")
    assert old.startswith(b"HTTP/1.0 200 OK")
    expect = b"PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
    assert b"aiohttp /e 2" in await _exchange(listener.port, expect, b"aiohttp /e 2")


async def test_a_malformed_head_is_answered_400_by_aiohttp(served: tuple[Listener, Seen]) -> None:
    listener, seen = served
    data = await _exchange(listener.port, b"GET /\x00bad HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n")
    assert b" 400 Bad Request\r\n" in data.partition(b"\r\n")[0] + b"\r\n"
    assert seen == []


async def test_connection_close_is_honoured(served: tuple[Listener, Seen]) -> None:
    listener, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)  # to EOF: the proxy closed
    writer.close()
    assert b"Connection: close\r\n" in data and data.endswith(b"fast /bye 0")


async def test_relayed_responses_go_out_whole_or_chunked(served: tuple[Listener, Seen]) -> None:
    listener, _ = served
    whole = await _exchange(listener.port, b"GET /relayed HTTP/1.1\r\nHost: x\r\n\r\n", b"relayed")
    assert whole.startswith(b"HTTP/1.1 201 Created\r\n")
    assert b"Content-Length: 7\r\n" in whole and whole.endswith(b"\r\n\r\nrelayed")
    streamed = await _exchange(listener.port, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", b"0\r\n\r\n")
    assert b"Transfer-Encoding: chunked\r\n" in streamed
    assert streamed.endswith(b"\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")
    head = await _exchange(listener.port, b"HEAD /relayed HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n")
    assert head.endswith(b"\r\n\r\n") and b"Content-Length" not in head  # unknown: the upstream sent none
    local = await _exchange(listener.port, b"HEAD /local HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n")
    assert b"Content-Length: 13\r\n" in local and local.endswith(b"\r\n\r\n")  # "fast /local 0", no body


async def test_open_connections_counts_the_fast_front(served: tuple[Listener, Seen]) -> None:
    listener, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"fast /a 0"), 5)
    assert listener.open_connections() == 1
    writer.close()


async def test_a_head_with_bare_line_feeds_is_left_to_aiohttp(served: tuple[Listener, Seen]) -> None:
    listener, seen = served
    data = await _exchange(listener.port, b"GET /lf HTTP/1.1\nHost: x\n\n", b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.")  # answered (whatever aiohttp's parser makes of it), not left waiting
    assert all(front == "aiohttp" for front, *_ in seen)


async def test_a_caller_leaving_mid_response_stops_the_relay(served: tuple[Listener, Seen]) -> None:
    listener, _ = served
    cut = asyncio.Event()
    CUT.append(cut)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    await asyncio.wait_for(cut.wait(), 5)
    CUT.remove(cut)


@pytest.fixture
async def immediate() -> AsyncIterator[tuple[Listener, Seen, list[tuple[str, Reply | None]]]]:
    """A front whose immediate handler answers now, later from a callback, or in a task, by path."""
    seen: Seen = []
    done_calls: list[tuple[str, Reply | None]] = []

    async def general(request: RequestView) -> Reply:
        seen.append(("general", request.method, request.raw_path, b""))
        return web.Response(text="general")

    async def later(request: FastRequest) -> Reply:
        await asyncio.sleep(0)
        return web.Response(text=f"later {request.raw_path}")

    def handle(request: FastRequest, done: Done) -> Reply | Awaitable[Reply] | None:
        path = request.raw_path
        seen.append(("immediate", request.method, path, request.body() or b""))
        loop = asyncio.get_running_loop()
        if path.startswith("/now"):
            return web.Response(text=f"now {path}")
        if path == "/fails":
            raise RuntimeError("handler bug")
        if path == "/later":
            return later(request)

        def continued(reply: Reply | None) -> None:
            done_calls.append((path, reply))
            done(reply)

        def answer() -> None:  # from a callback, as an upstream connection's data_received would
            if path == "/continued":
                request.continue_with(later(request), continued)
                return
            relayed = request.send_whole(200, None, CIMultiDict({"X-Up": "1"}), f"flight {path}".encode())
            done_calls.append((path, relayed))
            done(relayed)

        loop.call_later(0.01, answer)
        for event in IN_FLIGHT:
            event.set()
        return None

    listener = await start_listener("test", general, "127.0.0.1", 0, pass_through=True, immediate=handle)
    try:
        yield listener, seen, done_calls
    finally:
        await listener.close()


async def test_an_immediate_handler_answers_now_in_flight_or_later_on_one_connection(
    immediate: tuple[Listener, Seen, list[tuple[str, Reply | None]]],
) -> None:
    listener, seen, done_calls = immediate
    raw = b"".join(
        f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in ("/now1", "/flight", "/later", "/continued")
    )
    data = await _exchange(listener.port, raw, b"HTTP/1.1 200", count=4)
    bodies = [part.rpartition(b"\r\n\r\n")[2] for part in data.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert bodies == [b"now /now1", b"flight /flight", b"later /later", b"later /continued"]
    assert b"X-Up: 1\r\n" in data
    assert [path for _, _, path, _ in seen] == ["/now1", "/flight", "/later", "/continued"]
    assert [path for path, _ in done_calls] == ["/flight", "/continued"]
    assert all(reply is not None for _, reply in done_calls)


async def test_an_immediate_handler_that_raises_answers_500_and_closes(
    immediate: tuple[Listener, Seen, list[tuple[str, Reply | None]]],
) -> None:
    listener, _, _ = immediate
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /fails HTTP/1.1\r\nHost: x\r\n\r\nGET /now2 HTTP/1.1\r\nHost: x\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)  # to EOF: the connection closes after the 500
    writer.close()
    assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"now /now2" not in data


async def test_shutdown_waits_for_a_request_in_flight_on_callbacks(
    immediate: tuple[Listener, Seen, list[tuple[str, Reply | None]]],
) -> None:
    listener, _, done_calls = immediate
    in_flight = asyncio.Event()
    IN_FLIGHT.append(in_flight)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /flight HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(in_flight.wait(), 5)
    IN_FLIGHT.remove(in_flight)
    front = listener.front
    assert front is not None
    assert [connection.busy for connection in front.connections] == [True]
    await front.shutdown(grace=5)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.endswith(b"flight /flight")
    assert [path for path, _ in done_calls] == ["/flight"]
