"""Upstream call over HTTP/2: for endpoints whose port speaks HTTP/2 (a service declared `grpc` or `http2`)
and for the app behind a sidecar that fronts such a port.

One connection per endpoint (and TLS context) carries every request to it as concurrent streams; a second one
is opened only when the first is out of streams (the peer's MAX_CONCURRENT_STREAMS) or going away. HTTP/2 is
spoken with prior knowledge: in plain text to an app, inside the mesh's mTLS to a sidecar (which recognises
the preface), after the same SPIFFE ID check as the HTTP/1.1 client.

Failures are aiohttp's exception types, as for h1client.py, so the retry and outlier logic around it sees no
difference: a connect that times out is `ConnectionTimeoutError`, other connect errors, a reset stream and a
lost connection are `ClientConnectionError`s (a stream the server refused before processing it,
REFUSED_STREAM, is `StreamRefused`, which the `refused-stream` retry condition covers).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import hdrs
from h2 import events
from h2.errors import ErrorCodes
from h2.exceptions import H2Error, ProtocolError
from multidict import CIMultiDict, CIMultiDictProxy

from services.proxy.h2_names import StreamRefused
from services.proxy.h2base import H2Endpoint, H2Stream, headers_in, headers_out, raw
from services.proxy.keepalive import Keepalive
from services.proxy.upstream_connect import UpstreamTarget

if TYPE_CHECKING:
    from services.proxy.origination import Origination

Trailers = Callable[[], CIMultiDict[str] | None]
"""Where a request's trailers come from: asked once its body has been sent (a downstream HTTP/2 request's)."""
IDLE_TIMEOUT = 15.0
"""A connection without streams for this long is closed (as the HTTP/1.1 pools' idle connections are)."""


class H2Response:
    """An upstream's response on one stream: status and headers, the body as it arrives, trailers at its end."""

    __slots__ = ("_connection", "_released", "_stream", "content", "headers", "status")

    reason = None

    def __init__(self, connection: _ClientConnection, stream: H2Stream, status: int, headers: CIMultiDict[str]) -> None:
        self._connection = connection
        self._stream = stream
        self.status = status
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(headers)
        self.content = stream.body
        self._released = False

    def trailers(self) -> CIMultiDict[str] | None:
        """The trailers received after the body (None without any); read once the body has ended."""
        return self._stream.trailers

    def release(self) -> None:
        """Done with the response: a stream still open (the body not read to its end) is reset."""
        if self._released:
            return
        self._released = True
        self._connection.finished(self._stream)


class _ClientConnection(H2Endpoint):
    """One HTTP/2 connection to an upstream, its streams' responses delivered to waiting requests."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: H2Pool, idle_timeout: float) -> None:
        super().__init__(loop, client_side=True)
        self._pool = pool
        self._idle_timeout = idle_timeout
        self._heads: dict[int, asyncio.Future[tuple[int, CIMultiDict[str]]]] = {}
        self.context: ssl.SSLContext | None = None
        self.going_away = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.start(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        error = aiohttp.ServerDisconnectedError(f"upstream HTTP/2 connection closed: {exc or 'EOF'}")
        self.lost(error)
        for waiter in self._heads.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._heads.clear()
        self._pool.dropped(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            happened = self.h2.receive_data(data)
        except ProtocolError as err:
            self.flush()
            self.close_transport()
            self.lost(aiohttp.ClientConnectionError(f"upstream HTTP/2 protocol error: {err}"))
            return
        for event in happened:
            self._on(event)
        self.flush()
        if not self.streams:
            self.idle_after(self._idle_timeout)

    def eof_received(self) -> bool:
        return False

    @property
    def usable(self) -> bool:
        if self.closed or self.going_away or self.transport is None or self.transport.is_closing():
            return False
        limit = self.h2.remote_settings.max_concurrent_streams
        if self._pool.max_streams:
            limit = min(limit, self._pool.max_streams)
        return self.h2.open_outbound_streams < limit

    def _on(self, event: events.Event) -> None:
        stream_id = getattr(event, "stream_id", None) or 0
        if isinstance(event, events.ResponseReceived):
            pseudo, regular = headers_in(event.headers or ())
            waiter = self._heads.pop(stream_id, None)
            stream = self.streams.get(stream_id)
            if stream is not None and event.stream_ended is not None:
                stream.body.feed_eof()
            if waiter is not None and not waiter.done():
                status = pseudo.get(":status", "")
                waiter.set_result((int(status) if status.isdigit() else 502, regular))
        elif isinstance(event, events.DataReceived):
            stream = self.streams.get(stream_id)
            if stream is None:
                self.acknowledge(stream_id or 1, event.flow_controlled_length or 0)
                return
            if event.data:
                stream.body.feed_data(event.data)
            stream.flow.received(event.flow_controlled_length or 0)
        elif isinstance(event, events.TrailersReceived):
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.trailers = headers_in(event.headers or ())[1]
        elif isinstance(event, events.StreamEnded):
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                stream.body.feed_eof()
        elif isinstance(event, events.StreamReset):
            code = event.error_code
            error: aiohttp.ClientConnectionError = (
                StreamRefused(f"upstream refused the stream ({code!r})")
                if code == ErrorCodes.REFUSED_STREAM
                else aiohttp.ClientConnectionError(f"upstream reset the stream ({code!r})")
            )
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                stream.fail(error)
            waiter = self._heads.pop(stream_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
        elif isinstance(event, events.WindowUpdated | events.RemoteSettingsChanged):
            self.window_updated(stream_id)
        elif isinstance(event, events.ConnectionTerminated):
            self.going_away = True
            last = event.last_stream_id or 0
            for sid in [sid for sid in self._heads if sid > last]:  # never processed: safe to retry elsewhere
                waiter = self._heads.pop(sid)
                refused = StreamRefused("upstream going away before the stream was processed")
                if not waiter.done():
                    waiter.set_exception(refused)
                stream = self.streams.pop(sid, None)
                if stream is not None:
                    stream.fail(refused)
            if not self.streams:
                self.close_transport()

    async def exchange(
        self,
        method: str,
        scheme: str,
        authority: str,
        target: str,
        headers: CIMultiDict[str],
        body: object,
        trailers: Trailers | None = None,
    ) -> H2Response:
        self.busy_again()
        stream_id = self.h2.get_next_available_stream_id()
        stream = H2Stream(self, stream_id)
        self.streams[stream_id] = stream
        waiter: asyncio.Future[tuple[int, CIMultiDict[str]]] = self.loop.create_future()
        self._heads[stream_id] = waiter
        block = [
            (b":method", raw(method)),
            (b":scheme", raw(scheme)),
            (b":authority", raw(authority)),
            (b":path", raw(target)),
            *headers_out(headers),
        ]
        if headers.get(hdrs.CONTENT_TYPE, "").startswith("application/grpc"):
            block.append((b"te", b"trailers"))  # gRPC servers require it; it is hop-by-hop elsewhere
        if isinstance(body, bytes) and hdrs.CONTENT_LENGTH not in headers:
            block.append((b"content-length", raw(str(len(body)))))
        sender: asyncio.Task[None] | None = None
        ending = trailers() if trailers is not None and isinstance(body, bytes | None) else None
        try:
            self.h2.send_headers(stream_id, block, end_stream=not body and not ending)
            if isinstance(body, bytes) and body and len(body) <= self._sendable_now(stream_id):
                self.h2.send_data(stream_id, body, end_stream=not ending)  # the usual unary call: no task needed
                if ending:
                    self.h2.send_headers(stream_id, headers_out(ending), end_stream=True)
            elif body:
                sender = self.loop.create_task(self._send_request_body(stream, body, trailers))
            elif ending:
                self.h2.send_headers(stream_id, headers_out(ending), end_stream=True)
            self.flush()
            status, regular = await waiter
            while 100 <= status < 200:  # informational: the final response follows
                waiter = self.loop.create_future()
                self._heads[stream_id] = waiter
                status, regular = await waiter
        except BaseException:
            self._heads.pop(stream_id, None)
            if sender is not None:
                sender.cancel()
            self.reset(stream)
            raise
        return H2Response(self, stream, status, regular)

    def _sendable_now(self, stream_id: int) -> int:
        """How many body bytes fit in one DATA frame on the stream right now."""
        return min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)

    async def _send_request_body(self, stream: H2Stream, body: object, trailers: Trailers | None) -> None:
        try:
            await self.send_body(stream, body)  # type: ignore[arg-type]
            self.end_stream(stream, trailers() if trailers is not None else None)
        except (ConnectionError, aiohttp.ClientError, H2Error):
            self.reset(stream)
        except Exception as err:  # the caller's body failed to read: the upstream must not see a cut body as whole
            stream.fail(aiohttp.ClientPayloadError(f"request body failed: {err}"))
            self.reset(stream)

    def finished(self, stream: H2Stream) -> None:
        if stream.stream_id in self.streams:
            self.reset(stream)
        if self.streams:
            return
        if self.going_away:
            self.close_transport()
        else:
            self.idle_after(self._idle_timeout)


class H2Pool:
    """HTTP/2 connections to one endpoint, each multiplexing the requests sent to it."""

    def __init__(
        self,
        host: str,
        port: int,
        expected_identity: str | None,
        connect_timeout: float,
        origination: Origination | None = None,
        keepalive: Keepalive | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        max_streams: int = 0,
        unix_path: str | None = None,
    ) -> None:
        """`idle_timeout`: a connection without streams for this long is closed (connectionPool.http.idleTimeout);
        `max_streams`: requests in flight per connection (maxConcurrentStreams; 0: the server's limit only);
        `unix_path`: a Unix domain socket to connect to instead of host and port."""
        self._idle_timeout = idle_timeout
        self.max_streams = max_streams
        self._target = UpstreamTarget(host, port, expected_identity, connect_timeout, origination, keepalive, unix_path)
        self._connections: list[_ClientConnection] = []
        self._connecting: dict[ssl.SSLContext | None, asyncio.Future[_ClientConnection]] = {}
        self.closed = False

    async def request(
        self,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: bytes | aiohttp.StreamReader | None,
        context: ssl.SSLContext | None,
        trailers: Trailers | None = None,
    ) -> H2Response:
        """Send one request on a stream, ending with `trailers()` when it gives any (read once the body is sent);
        raises aiohttp.ClientError subclasses as h1client's pool does."""
        connection = await self._connection(context)
        authority = headers.get(hdrs.HOST) or self._target.authority
        scheme = "https" if context is not None else "http"
        try:
            return await connection.exchange(method, scheme, authority, target, headers, body, trailers)
        except H2Error as err:
            raise aiohttp.ClientConnectionError(f"upstream HTTP/2 error: {err}") from err

    async def _connection(self, context: ssl.SSLContext | None) -> _ClientConnection:
        """A connection with a stream free (the caller opens its stream before it next awaits); while one is being
        made, the others wait for it and look again (it may be full by then: then another is made)."""
        while True:
            for connection in self._connections:
                if connection.context is context and connection.usable:
                    return connection
            pending = self._connecting.get(context)
            if pending is not None:
                await asyncio.shield(pending)
                continue
            pending = asyncio.get_running_loop().create_future()
            self._connecting[context] = pending
            try:
                made = await self._connect(context)
            except BaseException as err:
                pending.set_exception(err)
                pending.exception()  # retrieved: the waiters (if any) re-raise it themselves
                raise
            finally:
                self._connecting.pop(context, None)
            pending.set_result(made)
            return made

    async def _connect(self, context: ssl.SSLContext | None) -> _ClientConnection:
        loop = asyncio.get_running_loop()
        factory: Callable[[], _ClientConnection] = lambda: _ClientConnection(loop, self, self._idle_timeout)  # noqa: E731
        transport, connection = await self._target.connect(factory, context)
        connection.context = context
        ssl_object = transport.get_extra_info("ssl_object")
        if (
            self._target.origination is not None
            and ssl_object is not None
            and ssl_object.selected_alpn_protocol() != "h2"
        ):
            transport.abort()
            raise aiohttp.ClientConnectionError(
                f"upstream {self._target.authority} did not negotiate HTTP/2 over TLS (ALPN h2)"
            )
        if self.closed:
            connection.close_transport()
            raise aiohttp.ClientConnectionError("upstream pool closed")
        self._connections.append(connection)
        return connection

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def dropped(self, connection: _ClientConnection) -> None:
        if connection in self._connections:
            self._connections.remove(connection)

    def close(self) -> None:
        """Stop using the connections: each closes once its streams in flight are done."""
        self.closed = True
        for connection in list(self._connections):
            connection.going_away = True
            if not connection.streams:
                connection.close_transport()
        self._connections.clear()
