"""Server front for HTTP/2: a connection whose first bytes are the HTTP/2 preface (prior knowledge, as gRPC
clients and the sidecars' own HTTP/2 client send it, in plain text or inside mTLS) is handed here by the
pass-through front, and each of its streams runs the listener's handler as a request of its own.

Every stream is a `H2Request` (the same RequestView the filter chain reads on HTTP/1.1) handled in a task of
its own, concurrently with the connection's other streams. The request is dispatched once the events of the
bytes that carried its headers are processed, so a small request whose body came with them (a unary gRPC
call) is seen whole, with its length, and can be retried. A relayed response is written by `H2Request.send`,
trailers included (gRPC's status travels in them); a local reply (`web.Response`) is written here, as a
gRPC status for a gRPC request, as Envoy does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Protocol

from aiohttp import StreamReader, hdrs, web
from h2 import events
from h2.errors import ErrorCodes
from h2.exceptions import H2Error, ProtocolError
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from services.proxy.h2_names import GRPC_CONTENT_TYPE, GRPC_MESSAGE, GRPC_STATUS, HTTP2, grpc_status_of, is_grpc
from services.proxy.h2base import H2Endpoint, H2Stream, headers_in, headers_out, raw
from services.proxy.request_view import Relayed, Reply, ViewHandler

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 3600.0
"""A downstream connection without streams for this long is closed (Envoy's default idle timeout: long-lived
gRPC channels stay up)."""


class Front(Protocol):
    """What a connection needs of its listener's front (h1server.PassThroughFront)."""

    handler: ViewHandler
    connections: set[Any]


class H2Request:
    """One HTTP/2 stream's request as the filter chain reads it."""

    __slots__ = (
        "_connection",
        "_stream",
        "content",
        "headers",
        "method",
        "raw_path",
        "scheme",
        "sent",
        "version",
        "websocket",
    )

    def __init__(
        self,
        connection: H2ServerProtocol,
        stream: H2Stream,
        method: str,
        path: str,
        scheme: str,
        headers: Any,
        websocket: bool = False,
    ) -> None:
        """`websocket`: an extended CONNECT for `:protocol websocket` (RFC 8441), seen by the filter chain as a
        GET with the HTTP/1.1 upgrade headers; its stream then carries WebSocket frames (h2_websocket.py)."""
        self._connection = connection
        self._stream = stream
        self.method = method
        self.raw_path = path
        self.scheme = scheme
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(headers)
        self.version = HTTP2
        self.content: StreamReader = stream.body
        self.sent = False
        """The response's headers are out (a failure then resets the stream instead of answering 500)."""
        self.websocket = websocket

    def open_tunnel(self, headers: CIMultiDict[str]) -> None:
        """Accept an extended CONNECT: 200 and `headers`, the stream left open both ways."""
        self._connection._send_headers(self, 200, headers, end=False)

    async def send_data(self, data: bytes) -> None:
        """Bytes on the open stream, within its flow-control windows."""
        await self._connection.send_body(self._stream, data)

    def end(self) -> None:
        """End what we send on the stream."""
        self._connection.end_stream(self._stream)

    @property
    def rel_url(self) -> URL:
        return URL(self.raw_path, encoded=True)

    @property
    def path(self) -> str:
        return self.rel_url.path

    @property
    def remote(self) -> str | None:
        return self._connection.remote

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._connection.loop

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._connection.transport

    @property
    def body_exists(self) -> bool:
        content = self.content
        return not (content.is_eof() and content.total_bytes == 0)

    @property
    def content_length(self) -> int | None:
        """The declared length, or the whole body's when it has all arrived; None while it streams."""
        declared = self.headers.get(hdrs.CONTENT_LENGTH)
        if declared is not None and declared.isdigit():
            return int(declared)
        content = self.content
        return content.total_bytes if content.is_eof() else None

    def trailers(self) -> CIMultiDict[str] | None:
        """The request's trailers (None without any); known once the body has been read to its end."""
        return self._stream.trailers

    async def read(self) -> bytes:
        return await self.content.read()

    def clone(self, *, headers: CIMultiDict[str]) -> H2Request:
        twin = H2Request(self._connection, self._stream, self.method, self.raw_path, self.scheme, headers)
        return twin

    async def send(
        self,
        status: int,
        reason: str | None,
        headers: CIMultiDict[str],
        body: StreamReader,
        trailers: Callable[[], CIMultiDict[str] | None] | None = None,
    ) -> Relayed:
        """Relay an upstream response: headers, the body as it comes, then its trailers (`trailers()`, read
        once the body has ended) or the end of the stream."""
        return await self._connection.respond(self, status, headers, body, trailers)


class H2ServerProtocol(H2Endpoint):
    """One downstream HTTP/2 connection: streams in, each handled in its own task."""

    def __init__(self, loop: asyncio.AbstractEventLoop, front: Front, remote: str | None) -> None:
        super().__init__(loop, client_side=False)
        self._front = front
        self.remote = remote
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._drained: asyncio.Future[None] | None = None
        self._closing = False

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.start(transport)
        self._front.connections.add(self)
        self.idle_after(IDLE_TIMEOUT)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._front.connections.discard(self)
        self.lost(ConnectionResetError("downstream HTTP/2 connection closed"))
        for task in self._tasks.values():
            task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            happened = self.h2.receive_data(data)
        except ProtocolError as err:
            log.info("HTTP/2 protocol error from %s: %s", self.remote, err)
            self.flush()
            self._close()
            return
        started: list[H2Request] = []
        for event in happened:
            self._on(event, started)
        self.flush()
        if started:
            self.busy_again()
        for request in started:
            stream_id = request._stream.stream_id
            if stream_id in self.streams:
                self._tasks[stream_id] = self.loop.create_task(self._serve(request))

    def eof_received(self) -> bool:
        return False

    def _on(self, event: events.Event, started: list[H2Request]) -> None:
        if isinstance(event, events.RequestReceived):
            self._received(event, started)
        elif isinstance(event, events.DataReceived):
            stream = self.streams.get(event.stream_id) if event.stream_id is not None else None
            if stream is None:  # a stream we reset: give its bytes back to the connection's window
                self.acknowledge(event.stream_id or 1, event.flow_controlled_length or 0)
                return
            if event.data:
                stream.body.feed_data(event.data)
            stream.flow.received(event.flow_controlled_length or 0)
        elif isinstance(event, events.StreamEnded):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.body.feed_eof()
        elif isinstance(event, events.TrailersReceived):  # request trailers end the body; relayed upstream
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.trailers = headers_in(event.headers or ())[1]
                stream.body.feed_eof()
        elif isinstance(event, events.StreamReset):
            stream = self.streams.pop(event.stream_id or 0, None)
            if stream is not None:
                stream.fail(ConnectionResetError(f"stream reset by the client ({event.error_code!r})"))
            task = self._tasks.pop(event.stream_id or 0, None)
            if task is not None:
                task.cancel()
        elif isinstance(event, events.WindowUpdated | events.RemoteSettingsChanged):
            self.window_updated(getattr(event, "stream_id", 0) or 0)
        elif isinstance(event, events.ConnectionTerminated):
            self._closing = True
            if not self._tasks:
                self._close()

    def _received(self, event: events.RequestReceived, started: list[H2Request]) -> None:
        stream_id = event.stream_id or 0
        pseudo, regular = headers_in(event.headers or ())
        stream = H2Stream(self, stream_id)
        self.streams[stream_id] = stream
        authority = pseudo.get(":authority")
        if authority is not None:
            regular.popall(hdrs.HOST, None)
            regular[hdrs.HOST] = authority
        method, path = pseudo.get(":method", "GET"), pseudo.get(":path", "/")
        if event.stream_ended is not None:
            stream.body.feed_eof()
        protocol = pseudo.get(":protocol")
        websocket = method == "CONNECT" and protocol is not None and protocol.lower() == "websocket"
        if websocket:  # RFC 8441: the filter chain sees the HTTP/1.1 upgrade it stands for
            method = "GET"
            regular[hdrs.UPGRADE] = "websocket"
            regular[hdrs.CONNECTION] = "Upgrade"
        started.append(H2Request(self, stream, method, path, pseudo.get(":scheme", "http"), regular, websocket))

    async def _serve(self, request: H2Request) -> None:
        stream = request._stream
        try:
            if request.method == "CONNECT":  # a tunnel, or an extended CONNECT for a protocol other than websocket
                await self._reply(request, web.Response(status=501, text="CONNECT is not supported\n"))
                return
            reply = await self._front.handler(request)
            if type(reply) is not Relayed:
                await self._reply(request, reply)
        except asyncio.CancelledError:
            self.reset(stream)
        except Exception as err:
            if request.sent or stream.error is not None:
                log.info("%s %s: HTTP/2 response cut short: %s", request.method, request.raw_path, err)
                self.reset(stream, ErrorCodes.INTERNAL_ERROR)
            else:
                log.error("%s %s: handler failed", request.method, request.raw_path, exc_info=err)
                self._send_headers(request, 500, CIMultiDict({hdrs.CONTENT_LENGTH: "0"}), end=True)
        finally:
            self._tasks.pop(stream.stream_id, None)
            self.streams.pop(stream.stream_id, None)
            if not self._tasks:
                self._idle()

    async def _reply(self, request: H2Request, reply: Reply) -> None:
        if not isinstance(reply, web.Response):
            raise RuntimeError(f"the HTTP/2 front cannot send a {type(reply).__name__}")
        body = reply.body
        data = bytes(body) if isinstance(body, bytes | bytearray) else b""
        headers = CIMultiDict(reply.headers)
        if is_grpc(request.headers) and not is_grpc(headers):
            self._grpc_reply(request, reply.status, headers, data)
            return
        await self._write_whole(request, reply.status, headers, data)

    def _grpc_reply(self, request: H2Request, status: int, headers: CIMultiDict[str], text: bytes) -> None:
        """A local reply to a gRPC call, as a trailers-only response: HTTP 200 and the mapped gRPC status."""
        headers.popall(hdrs.CONTENT_TYPE, None)
        headers.popall(hdrs.CONTENT_LENGTH, None)
        headers[hdrs.CONTENT_TYPE] = GRPC_CONTENT_TYPE
        headers[GRPC_STATUS] = str(grpc_status_of(status))
        headers[GRPC_MESSAGE] = _percent_encoded(text.decode("utf-8", "replace") or HTTPStatus(status).phrase)
        self._send_headers(request, 200, headers, end=True)

    async def _write_whole(self, request: H2Request, status: int, headers: CIMultiDict[str], body: bytes) -> int:
        """Headers and a body held whole: in one go when the windows allow, else as they open."""
        empty = request.method == "HEAD" or status in (204, 304)
        if not empty:
            headers[hdrs.CONTENT_LENGTH] = str(len(body))
        self._send_headers(request, status, headers, end=empty or not body)
        if empty or not body:
            return 0
        stream = request._stream
        try:
            fits = len(body) <= min(
                self.h2.local_flow_control_window(stream.stream_id), self.h2.max_outbound_frame_size
            )
            if fits:
                self.h2.send_data(stream.stream_id, body, end_stream=True)
                self.flush()
                return len(body)
        except H2Error as err:
            raise ConnectionResetError(f"HTTP/2 stream {stream.stream_id} closed: {err}") from err
        sent = await self.send_body(stream, body)
        self.end_stream(stream)
        return sent

    def _send_headers(self, request: H2Request, status: int, headers: CIMultiDict[str], end: bool) -> None:
        request.sent = True
        stream = request._stream
        if stream.error is not None or self.closed:
            raise stream.error or ConnectionResetError("downstream HTTP/2 connection closed")
        block = [(b":status", raw(str(status))), *headers_out(headers)]
        self.h2.send_headers(stream.stream_id, block, end_stream=end)
        self.flush()

    async def respond(
        self,
        request: H2Request,
        status: int,
        headers: CIMultiDict[str],
        body: StreamReader,
        trailers: Callable[[], CIMultiDict[str] | None] | None,
    ) -> Relayed:
        stream = request._stream
        empty = request.method == "HEAD" or status in (204, 304)
        if body.is_eof() and (trailers is None or not trailers()):
            whole = body.read_nowait(-1)
            sent = await self._write_whole(request, status, headers, whole)
            return Relayed(status, headers, sent, sent, headers.get(GRPC_STATUS, ""))
        self._send_headers(request, status, headers, end=False)
        sent = 0
        if empty:
            async for _ in body.iter_any():
                pass
        else:
            sent = await self.send_body(stream, body)
        ending = trailers() if trailers is not None else None
        self.end_stream(stream, ending)
        length = headers.get(hdrs.CONTENT_LENGTH)
        grpc_status = (ending.get(GRPC_STATUS, "") if ending else "") or headers.get(GRPC_STATUS, "")
        return Relayed(status, headers, int(length) if length and length.isdigit() else None, sent, grpc_status)

    def _idle(self) -> None:
        self.idle_after(IDLE_TIMEOUT)
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        if self._closing:
            self._close()

    def _close(self) -> None:
        self._closing = True
        if not self.closed:
            try:
                self.h2.close_connection()
            except H2Error:
                pass
            self.flush()
        self.close_transport()

    def shutdown(self) -> asyncio.Future[None] | None:
        """GOAWAY, and close once the streams in flight are answered (their future, for the caller to wait on)."""
        if not self._tasks:
            self._close()
            return None
        self._closing = True
        try:
            self.h2.close_connection()
        except H2Error:
            pass
        self.flush()
        if self._drained is None:
            self._drained = self.loop.create_future()
        return self._drained


def _percent_encoded(message: str) -> str:
    """gRPC's grpc-message encoding: bytes outside printable ASCII (and `%`) as %XX."""
    out = []
    for byte in message.encode("utf-8"):
        out.append(chr(byte) if 0x20 <= byte <= 0x7E and byte != 0x25 else f"%{byte:02X}")
    return "".join(out)
