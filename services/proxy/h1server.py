"""Server front of the listeners in the common case: HTTP/1.1 requests parsed below aiohttp's request objects.

Each connection's protocol frames one request at a time (head up to the blank line, then a Content-Length
body of at most `MAX_BODY` bytes), parses the head with aiohttp's C request parser and runs the listener's
handler (the same filter chain and telemetry as on aiohttp's server) on a `FastRequest`. A relayed upstream
response is written by `FastRequest.send` (head and body in one write when the body is already in); a
local reply (`web.Response`) is serialized here. Anything else is handed, with every byte not yet
answered, to aiohttp's own protocol for the rest of the connection: WebSocket and other upgrades, chunked
or larger bodies, `Expect`, HTTP/1.0, CONNECT, heads that do not parse (aiohttp answers them 400).
Requests on one connection are served in order, one at a time (pipelined ones wait in the buffer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import StreamReader, hdrs, web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.helpers import must_be_empty_body, rfc822_formatted_time, should_remove_content_length
from aiohttp.http import SERVER_SOFTWARE, HttpVersion, HttpVersion11
from aiohttp.http_parser import HttpRequestParser
from aiohttp.http_writer import _serialize_headers
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from services.proxy.h2_names import PREFACE
from services.proxy.request_view import Done, Relayed, Reply, ViewHandler

if TYPE_CHECKING:
    from services.proxy.h2server import H2ServerProtocol

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024
"""Larger request bodies (and any chunked one) go to aiohttp's server, which streams them."""
MAX_BUFFERED = 256 * 1024
"""Bytes pipelined behind the request in flight before the connection stops reading."""
KEEPALIVE_TIMEOUT = 75.0
"""An idle keep-alive connection is closed after this long (aiohttp's server default)."""
CHUNK = 64 * 1024
_HEAD_END = b"\r\n\r\n"
_BARE_LF_END = b"\n\n"
_PREFACE_START = PREFACE[:4]


class FastRequest:
    """A whole HTTP/1.1 request (head parsed, body in memory) as the filter chain reads it."""

    __slots__ = (
        "_connection",
        "_message",
        "_rel_url",
        "content",
        "headers",
        "method",
        "raw_path",
        "should_close",
        "version",
    )

    def __init__(self, connection: PassThroughProtocol, message: Any, payload: StreamReader) -> None:
        self._connection = connection
        self._message = message
        self.method: str = message.method
        self.raw_path: str = message.path
        self.headers: CIMultiDictProxy[str] = message.headers
        self.version: HttpVersion = message.version
        self.content = payload
        self.should_close: bool = message.should_close
        self._rel_url: URL | None = None

    @property
    def rel_url(self) -> URL:
        if self._rel_url is None:
            url: URL = self._message.url
            self._rel_url = url.relative() if url.absolute else url
        return self._rel_url

    @property
    def path(self) -> str:
        return self.rel_url.path

    @property
    def remote(self) -> str | None:
        return self._connection.remote

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The connection's loop (asyncio.get_running_loop costs a getpid system call per call)."""
        return self._connection._loop

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._connection.transport

    @property
    def body_exists(self) -> bool:
        return self.content.total_bytes > 0

    @property
    def content_length(self) -> int | None:
        return self.content.total_bytes if self.body_exists else None

    async def read(self) -> bytes:
        return self.content.read_nowait(-1)

    def clone(self, *, headers: CIMultiDict[str]) -> FastRequest:
        twin = FastRequest(self._connection, self._message, self.content)
        twin.headers = CIMultiDictProxy(headers)
        return twin

    async def send(self, status: int, reason: str | None, headers: CIMultiDict[str], body: StreamReader) -> Relayed:
        """Relay an upstream response: in one write when its body is in, else the head then chunks as they come."""
        return await self._connection.send(self, status, reason, headers, body)

    def send_whole(self, status: int, reason: str | None, headers: CIMultiDict[str], body: bytes) -> Relayed:
        """Relay an upstream response whose body is all in, now (head and body in one write)."""
        sent = self._connection._write_whole(self, status, reason, headers, body)
        return Relayed(status, headers, sent, sent)

    def continue_with(self, rest: Awaitable[Reply], done: Done) -> None:
        """Go on in a task (for an immediate handler whose request needs to wait): `rest` gives the reply,
        which the front writes unless it is relayed already, then `done` is called with it."""
        self._connection.continue_with(self, rest, done)

    def answer(self, reply: web.Response) -> None:
        """Write a local reply now (an immediate handler's, from a callback)."""
        self._connection._reply(self, reply)

    def fail(self, err: Exception) -> None:
        """An immediate handler could not write its response: 500 if nothing was written yet; the connection
        closes once `done` is called."""
        self._connection._failed(self, err)

    def body(self) -> bytes | None:
        """The whole body (None without one), read now."""
        return self.content.read_nowait(-1) if self.content.total_bytes else None


ImmediateHandler = Callable[[FastRequest, Done], Reply | Awaitable[Reply] | None]
"""Answers a request now (a reply), in flight (None: it calls `done` once the response is out, having written
it with `FastRequest.send_whole` or continued with `FastRequest.continue_with`), or later (an awaitable)."""


class PassThroughProtocol(BaseProtocol):
    """One downstream connection served by the pass-through front until it is closed or handed to aiohttp."""

    def __init__(self, loop: asyncio.AbstractEventLoop, front: PassThroughFront) -> None:
        super().__init__(loop)
        self._front = front
        self._parser: Any = None
        self._buffer = b""
        """Bytes received and not yet framed into a request (usually empty, or exactly one request)."""
        self._pending: tuple[Any, StreamReader, int, int] | None = None
        """A head whose body is still arriving: (message, payload, head length, body length)."""
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        """A request is being answered (in a task, or in flight on callbacks)."""
        self._current: FastRequest | None = None
        self._drained: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._closing = False
        self._handed_over = False
        self._idle_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._response_started = False
        self._fresh = True
        """Nothing received yet but what may be the start of the HTTP/2 preface."""
        self.remote: str | None = None
        self.transport: asyncio.Transport | None = None

    @property
    def busy(self) -> bool:
        return self._busy

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple | list) and peer else None
        self._parser = HttpRequestParser(
            self, self._loop, 2**16, max_line_size=8190, max_field_size=8190, auto_decompress=False
        )
        self._front.connections.add(self)
        self._idle_since = self._loop.time()
        self._idle_timer = self._loop.call_later(KEEPALIVE_TIMEOUT, self._check_idle)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closing = True
        self._front.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._buffer = self._buffer + data if self._buffer else data
        if not self._busy:
            self._next()
        elif len(self._buffer) > MAX_BUFFERED and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        """Called by the body reader after every read: nothing to do unless reading was paused."""
        if self._reading_paused or self._buffer_paused:
            super().resume_reading(resume_parser)

    def eof_received(self) -> bool:
        """The caller closed its side: the connection closes (as on aiohttp's server; no half-close)."""
        self._closing = True
        return False

    def _next(self) -> None:
        """Frame, parse and start the next request in the buffer, or hand the connection over."""
        buffer = self._buffer
        if self._fresh and buffer.startswith(_PREFACE_START):
            if buffer.startswith(PREFACE):
                self._hand_over(http2=True)
                return
            if PREFACE.startswith(buffer):  # the rest of the preface is still on its way
                return
        self._fresh = False
        if self._pending is None:
            end = buffer.find(_HEAD_END)
            if end < 0:
                if len(buffer) > MAX_HEAD or _BARE_LF_END in buffer:  # aiohttp's parser decides on those
                    self._hand_over()
                return
            head_length = end + len(_HEAD_END)
            try:
                head = buffer if head_length == len(buffer) else buffer[:head_length]
                messages, upgraded, _ = self._parser.feed_data(head)
            except Exception:  # malformed: aiohttp's server answers it (outside this handler's context)
                messages, upgraded = [], True
            if upgraded or len(messages) != 1:
                self._hand_over()
                return
            message, payload = messages[0]
            length = _body_length(message)
            if length is None:
                self._hand_over()
                return
            total = head_length + length
            if len(buffer) < total:
                self._pending = (message, payload, head_length, length)
                return
        else:
            message, payload, head_length, length = self._pending
            total = head_length + length
            if len(buffer) < total:
                return
        if length:
            self._parser.feed_data(buffer[head_length:total])
        self._pending = None
        self._buffer = buffer = buffer[total:]
        if self._reading_paused and len(buffer) <= MAX_BUFFERED and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        self._dispatch(FastRequest(self, message, payload))

    def _dispatch(self, request: FastRequest) -> None:
        """Start the request: on the immediate handler when the listener has one (answered now, in flight on
        callbacks, or continued in a task), else on the handler in a task."""
        self._busy = True
        self._current = request
        self._response_started = False
        immediate = self._front.immediate
        if immediate is None:
            self._task = self._loop.create_task(self._serve(request, self._front.handler(request), None))
            return
        try:
            outcome = immediate(request, self._answered)
        except Exception as err:
            self._failed(request, err)
            self._answered(None)
            return
        if outcome is None:  # in flight: the handler calls _answered once the response is out
            return
        if isinstance(outcome, Relayed | web.StreamResponse):
            try:
                self._reply(request, outcome)
            except Exception as err:
                self._failed(request, err)
            self._answered(outcome)
            return
        self._task = self._loop.create_task(self._serve(request, outcome, None))

    def continue_with(self, request: FastRequest, rest: Awaitable[Reply], done: Done) -> None:
        """An immediate handler's request goes on in a task: `rest` gives the reply, then `done` is called."""
        self._task = self._loop.create_task(self._serve(request, rest, done))

    async def _serve(self, request: FastRequest, reply_of: Awaitable[Reply], done: Done | None) -> None:
        reply: Reply | None = None
        try:
            reply = await reply_of
            self._reply(request, reply)
        except Exception as err:
            self._failed(request, err)
        finally:
            self._task = None
            if done is not None:
                done(reply)
        self._answered(reply)

    def _reply(self, request: FastRequest, reply: Reply) -> None:
        """Write a local reply (a relayed one is already out; tested first: web's types are ABCs)."""
        if type(reply) is Relayed:
            return
        if not isinstance(reply, web.Response):
            raise RuntimeError(f"the pass-through front cannot send a {type(reply).__name__}")
        body, headers, status = _body_of(reply), reply.headers, reply.status
        if hdrs.CONTENT_LENGTH not in headers and not should_remove_content_length(request.method, status):
            headers[hdrs.CONTENT_LENGTH] = str(len(body))  # a HEAD reply too, as aiohttp does
        self._write_whole(request, status, reply.reason, headers, body)

    def _failed(self, request: FastRequest, err: Exception) -> None:
        if self._response_started:
            log.info("%s %s: response cut short: %s", request.method, request.raw_path, err)
        else:
            log.error("%s %s: handler failed", request.method, request.raw_path, exc_info=err)
            self._write_whole(
                request,
                500,
                None,
                CIMultiDict({hdrs.CONTENT_TYPE: "text/plain; charset=utf-8"}),
                b"500 Internal Server Error\n\nServer got itself in trouble",
            )
        self._closing = True

    def _answered(self, reply: Reply | None) -> None:
        """The request's response is out (or failed): the next pipelined request, or close, or wait idle."""
        self._busy = False
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        request = self._current
        self._current = None
        if self._closing or (request is not None and request.should_close):
            self._close()
            return
        self._idle_since = self._loop.time()
        if self._buffer and not self._handed_over:
            self._loop.call_soon(self._resume)

    def _resume(self) -> None:
        if not self._busy and not self._closing and self._buffer:
            self._next()

    async def send(
        self, request: FastRequest, status: int, reason: str | None, headers: CIMultiDict[str], body: StreamReader
    ) -> Relayed:
        if body.is_eof():
            whole = body.read_nowait(-1)
            sent = self._write_whole(request, status, reason, headers, whole)
            return Relayed(status, headers, sent, sent)
        empty = must_be_empty_body(request.method, status)
        chunked = not empty and hdrs.CONTENT_LENGTH not in headers
        if chunked:
            headers[hdrs.TRANSFER_ENCODING] = "chunked"
        self._write_head(request, status, reason, headers, None, empty)
        transport = self.transport
        sent = 0
        async for chunk in body.iter_chunked(CHUNK):
            if transport is None or transport.is_closing():  # the caller left: stop reading the upstream
                raise ConnectionResetError("downstream connection closed during the response")
            if empty:
                continue
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            sent += len(chunk)
            if self._paused:
                await self._drain_helper()
        if chunked and transport is not None and not transport.is_closing():
            transport.write(b"0\r\n\r\n")
        length = headers.get(hdrs.CONTENT_LENGTH)
        return Relayed(status, headers, int(length) if length and length.isdigit() else None, sent)

    def _write_whole(
        self, request: FastRequest, status: int, reason: str | None, headers: CIMultiDict[str], body: bytes
    ) -> int:
        """Head and body in one write; returns the body bytes sent."""
        empty = must_be_empty_body(request.method, status)
        if not empty and hdrs.CONTENT_LENGTH not in headers:
            headers[hdrs.CONTENT_LENGTH] = str(len(body))
        head = self._write_head(request, status, reason, headers, body, empty)
        payload = b"" if empty else body
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(head + payload if payload else head)
        return len(payload)

    def _write_head(
        self,
        request: FastRequest,
        status: int,
        reason: str | None,
        headers: CIMultiDict[str],
        body: bytes | None,
        empty: bool,
    ) -> bytes:
        """The response head as aiohttp's StreamResponse would write it; written here unless `body` is given."""
        self._response_started = True
        if empty:
            if hdrs.CONTENT_LENGTH in headers and should_remove_content_length(request.method, status):
                del headers[hdrs.CONTENT_LENGTH]
            headers.popall(hdrs.TRANSFER_ENCODING, None)
        elif headers.get(hdrs.CONTENT_LENGTH) != "0":
            headers.setdefault(hdrs.CONTENT_TYPE, "application/octet-stream")
        if hdrs.DATE not in headers:
            headers[hdrs.DATE] = rfc822_formatted_time()
        headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
        if hdrs.CONNECTION not in headers and request.should_close:
            headers[hdrs.CONNECTION] = "close"
        if reason is None:
            reason = _phrase(status)
        head: bytes = _serialize_headers(f"HTTP/1.1 {status} {reason}", headers)
        if body is None and self.transport is not None and not self.transport.is_closing():
            self.transport.write(head)
        return head

    def _hand_over(self, http2: bool = False) -> None:
        """aiohttp's server protocol (the HTTP/2 front's with `http2`) takes the connection, starting with the
        bytes not answered yet."""
        transport = self.transport
        if transport is None or self._handed_over:
            return
        self._handed_over = True
        self._closing = True
        self._front.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        protocol: asyncio.Protocol
        if http2:
            from services.proxy.h2server import H2ServerProtocol  # loaded by the first HTTP/2 peer

            protocol = H2ServerProtocol(self._loop, self._front, self.remote)
        else:
            protocol = self._front.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        data, self._buffer = self._buffer, b""
        if data:
            protocol.data_received(data)

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self._closing:
            return
        idle = self._loop.time() - self._idle_since
        if not self._busy and idle >= KEEPALIVE_TIMEOUT:
            self._close()
            return
        wait = KEEPALIVE_TIMEOUT - idle if not self._busy else KEEPALIVE_TIMEOUT
        self._idle_timer = self._loop.call_later(max(wait, 0.1), self._check_idle)

    def _close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def shutdown(self) -> asyncio.Future[None] | None:
        """Close when idle; returns what completes with the request in flight, if any, for the caller to wait on
        (its task is cancelled by `PassThroughFront.shutdown` when the grace runs out)."""
        if not self._busy:
            self._close()
            return None
        self._closing = True
        if self._task is not None:
            return self._task
        if self._drained is None:
            self._drained = self._loop.create_future()
        return self._drained


class PassThroughFront:
    """A listener's pass-through front: the handler, aiohttp's server for the rest, and the open connections."""

    def __init__(
        self,
        handler: ViewHandler,
        fallback: Callable[[], asyncio.Protocol],
        immediate: ImmediateHandler | None = None,
    ) -> None:
        """`immediate`: the listener's handler for requests answered from the connection's own callbacks
        (None: `handler` runs every request in a task)."""
        self.handler = handler
        self.fallback = fallback
        self.immediate = immediate
        self.connections: set[PassThroughProtocol | H2ServerProtocol] = set()

    def protocol(self) -> PassThroughProtocol:
        return PassThroughProtocol(asyncio.get_running_loop(), self)

    async def shutdown(self, grace: float) -> None:
        """Close idle connections at once; requests in flight get `grace` seconds, then are cancelled."""
        tasks = [task for task in (c.shutdown() for c in list(self.connections)) if task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
        for connection in list(self.connections):
            connection._close()


def _body_length(message: Any) -> int | None:
    """The body's length (0 without one) when the pass-through front serves this request itself; None when
    aiohttp's server does (HTTP/1.0, upgrades, chunked or larger bodies, Expect, CONNECT)."""
    if message.version != HttpVersion11 or message.upgrade or message.chunked or message.method == hdrs.METH_CONNECT:
        return None
    headers = message.headers
    if hdrs.EXPECT in headers or hdrs.UPGRADE in headers or hdrs.TRANSFER_ENCODING in headers:
        return None
    value = headers.get(hdrs.CONTENT_LENGTH)
    if value is None:
        return 0
    length = int(value)  # the parser accepted the head: a valid length
    return length if length <= MAX_BODY else None


def _body_of(reply: web.Response) -> bytes:
    body = reply.body
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    raise RuntimeError(f"the pass-through front cannot send a {type(body).__name__} body")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
