"""Data-plane benchmark floor: a bare HTTP/1.1 pass-through on the sidecar's building blocks, with no mesh feature.

The sidecar's pass-through front and lean client parse with aiohttp's C parsers on uvloop. This proxy does
only that: each downstream connection gets one upstream connection of its own; every request is parsed,
its hop-by-hop headers dropped, re-serialized and sent up; every response comes back the same way. No
routing, load balancing, pool, retries, timeouts, telemetry, request ids or TLS. Its numbers in the benchmark
say what Python costs per request before any of the mesh's work, so the sidecar's distance from it is what
its features cost.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

import uvloop
from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpRequestParser, HttpResponseParser, RawRequestMessage, RawResponseMessage
from aiohttp.http_writer import _serialize_headers
from multidict import CIMultiDict, CIMultiDictProxy

from bench.upstream import until_signalled

HOP_BY_HOP = ("Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade")
LIMIT = 2**16
M = TypeVar("M", RawRequestMessage, RawResponseMessage)


def forwarded_head(first_line: str, headers: CIMultiDictProxy[str], body_length: int) -> bytes:
    """The head sent on: the same headers without hop-by-hop ones, framed by Content-Length."""
    copy = CIMultiDict(headers)
    for name in HOP_BY_HOP:
        copy.popall(name, None)
    if body_length or "Content-Length" in headers:
        copy["Content-Length"] = str(body_length)
    head: bytes = _serialize_headers(first_line, copy)
    return head


class _InOrder(Generic[M]):
    """Messages written in the order they were parsed: at once when the body is in (the common case), else
    from a task that waits for the body and for the message before it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, write: Callable[[M, bytes], None]) -> None:
        self._loop = loop
        self._write: Callable[[M, bytes], None] = write
        self._last: asyncio.Task[None] | None = None

    def send(self, message: M, payload: StreamReader) -> None:
        if self._last is None and payload.is_eof():
            self._write(message, payload.read_nowait(-1))
        else:
            self._last = self._loop.create_task(self._later(message, payload, self._last))

    async def _later(self, message: M, payload: StreamReader, before: asyncio.Task[None] | None) -> None:
        body = await payload.read()
        if before is not None:
            await before
        self._write(message, body)
        if self._last is asyncio.current_task():
            self._last = None


class _Upstream(BaseProtocol):
    """The upstream connection of one downstream connection: responses go back in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, downstream: _Downstream) -> None:
        super().__init__(loop)
        self._messages = HttpResponseParser(self, loop, LIMIT, max_line_size=8190, max_field_size=8190)
        self._responses = _InOrder(loop, downstream.write_response)
        self._downstream = downstream

    def data_received(self, data: bytes) -> None:
        messages, _, _ = self._messages.feed_data(data)
        for message, payload in messages:
            self._responses.send(message, payload)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._downstream.close()


class _Downstream(BaseProtocol):
    """One client connection: requests parsed and sent up on its own upstream connection."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(loop)
        self._loop = loop
        self._address = (upstream_host, upstream_port)
        self._messages = HttpRequestParser(self, loop, LIMIT, max_line_size=8190, max_field_size=8190)
        self._requests = _InOrder(loop, self._write_request)
        self._upstream: _Upstream | None = None
        self._waiting: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        host, port = self._address
        try:
            _, upstream = await self._loop.create_connection(lambda: _Upstream(self._loop, self), host, port)
        except OSError:
            self.close()
            return
        self._upstream = upstream
        for data in self._waiting:
            upstream.transport.write(data)  # type: ignore[union-attr]
        self._waiting.clear()

    def data_received(self, data: bytes) -> None:
        messages, _, _ = self._messages.feed_data(data)
        for message, payload in messages:
            self._requests.send(message, payload)

    def _write_request(self, message: RawRequestMessage, body: bytes) -> None:
        data = forwarded_head(f"{message.method} {message.path} HTTP/1.1", message.headers, len(body)) + body
        upstream = self._upstream
        if upstream is None or upstream.transport is None:
            self._waiting.append(data)
        else:
            upstream.transport.write(data)

    def write_response(self, message: RawResponseMessage, body: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            head = forwarded_head(f"HTTP/1.1 {message.code} {message.reason}", message.headers, len(body))
            self.transport.write(head + body)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self._upstream is not None and self._upstream.transport is not None:
            self._upstream.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def start(host: str, port: int, upstream_host: str, upstream_port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Downstream(upstream_host, upstream_port), host, port, backlog=1024)


async def serve(args: argparse.Namespace) -> None:
    await until_signalled(await start(args.host, args.port, args.upstream_host, args.upstream_port))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-host", default="127.0.0.1")
    parser.add_argument("--upstream-port", type=int, required=True)
    uvloop.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
