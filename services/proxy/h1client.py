"""Upstream call of both paths in the common case: a lean HTTP/1.1 keep-alive client on asyncio protocols.

Used instead of aiohttp's ClientSession when a request's body is absent or already in memory and the
cluster's pool needs no per-connection limits (upstream.py decides); streamed bodies, WebSocket upgrades,
mirrors and limited pools keep using aiohttp's client. It writes the request head and body in one write
and parses the response with aiohttp's own (C) response parser, so the response is the same
`(status, reason, headers, content StreamReader)` a ClientResponse would give, with its flow control.
Failures are aiohttp's exception types, so the retry and outlier logic around it sees no difference: a
connect that times out is `ConnectionTimeoutError`, other connect errors and disconnects are
`ClientConnectionError`s, and a pooled connection the server closed before answering is retried once on
a new connection for idempotent methods, as aiohttp does.

TLS is whatever context the caller passes: the mesh client context (the peer's SPIFFE ID is then checked
after the handshake) or a cluster's origination context (origination.py: SNI is its server name, and its
subjectAltNames are checked after the handshake); a failed check is a connect error, before any request
byte is written.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import hdrs
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpResponseParser
from aiohttp.http_writer import _serialize_headers
from multidict import CIMultiDict, CIMultiDictProxy

from services.proxy.keepalive import Keepalive
from services.proxy.upstream_connect import UpstreamTarget
from services.proxy.whole_body import WholeBody

if TYPE_CHECKING:
    from services.proxy.origination import Origination

READ_LIMIT = 2**16
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_EMPTY_BODY_STATUS = frozenset({204, 304})


class _Connection(BaseProtocol):
    """One upstream connection; at most one request in flight, returned to its pool once the body is read."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._parser: Any = None
        """The parser of the request in flight (None between requests: bytes then are unexpected)."""
        self._kept_parser: Any = None
        self._kept_for_head = False
        self._heads: Any = None
        """A parser that reads response heads only, for `_whole`; None while it must not be used (a HEAD
        request's response, or one the full parser has started on)."""
        self._kept_heads: Any = None
        self._waiter: asyncio.Future[tuple[Any, aiohttp.StreamReader]] | None = None
        self._callback: Callable[[Any, aiohttp.StreamReader | None, BaseException | None], None] | None = None
        """Instead of the waiter: called once with the response head and body reader, or with the failure."""
        self._payload: aiohttp.StreamReader | None = None
        self.context: ssl.SSLContext | None = None
        self.reusable = True
        self.idle_since = 0.0
        self.used = False

    def start(self, head_request: bool) -> asyncio.Future[tuple[Any, aiohttp.StreamReader]]:
        """Expect one response; the parser is kept for the connection's next request (a response is only
        ever reused after it was read to its end, so the parser is then between messages)."""
        self._expect(head_request)
        self._waiter = self._loop.create_future()
        return self._waiter

    def _expect(self, head_request: bool) -> None:
        parser = self._kept_parser
        if parser is None or self._kept_for_head != head_request:
            parser = self._kept_parser = HttpResponseParser(
                self,
                self._loop,
                READ_LIMIT,
                payload_exception=aiohttp.ClientPayloadError,
                response_with_body=not head_request,
                read_until_eof=True,
                auto_decompress=False,
            )
            self._kept_for_head = head_request
        self._parser = parser
        if head_request:
            self._heads = None
            return
        heads = self._kept_heads
        if heads is None:
            heads = self._kept_heads = HttpResponseParser(
                self, self._loop, READ_LIMIT, response_with_body=False, auto_decompress=False
            )
        self._heads = heads

    def start_calling(
        self, head_request: bool, callback: Callable[[Any, aiohttp.StreamReader | None, BaseException | None], None]
    ) -> None:
        """As `start`, but the response (or the failure) goes to `callback`, from the protocol's own callbacks."""
        heads = self._kept_heads
        if head_request or heads is None or self._kept_for_head:
            self._expect(head_request)
        else:  # the usual case, a GET after a GET: both parsers are kept for it
            self._parser = self._kept_parser
            self._heads = heads
        self._waiter = None
        self._callback = callback

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self.reusable = False
            if self.transport is not None:
                self.transport.close()
            return
        heads = self._heads
        if heads is not None:
            self._heads = None  # whatever this read holds, the rest of the response is the full parser's
            end = data.find(b"\r\n\r\n")
            if end > 0 and self._whole(heads, data, end + 4):
                return
        try:
            messages, upgraded, tail = parser.feed_data(data)
        except Exception as err:
            self.reusable = False
            if self.transport is not None:
                self.transport.close()
            self._fail(aiohttp.ClientPayloadError(f"malformed upstream response: {err!r}"))
            return
        if upgraded or tail:
            self.reusable = False
        for message, payload in messages:
            if 100 <= message.code < 200 and message.code != 101:
                continue  # interim (100 Continue): the final response follows
            if message.code in _EMPTY_BODY_STATUS and not payload.is_eof():
                payload.feed_eof()
            self._deliver(message, payload)

    def _whole(self, heads: Any, data: bytes, head_length: int) -> bool:
        """Deliver a response that is this one read exactly, a head and the Content-Length body after it (the
        common case), without a body reader fed chunk by chunk. False, with nothing delivered, for anything
        else: the full parser then reads `data` from its start."""
        try:
            messages, upgraded, _ = heads.feed_data(data if head_length == len(data) else data[:head_length])
        except Exception:  # malformed: the full parser says how; this one is made anew
            self._kept_heads = None
            return False
        if upgraded or len(messages) != 1:
            return False
        message = messages[0][0]
        code = message.code
        if code < 200 or code in _EMPTY_BODY_STATUS or message.chunked or message.upgrade:
            return False
        headers = message.headers
        length = headers.get(hdrs.CONTENT_LENGTH)
        if length is None or not length.isdigit() or hdrs.TRANSFER_ENCODING in headers:
            return False
        if head_length + int(length) != len(data):
            return False
        self._deliver(message, WholeBody(data[head_length:]))
        return True

    def _deliver(self, message: Any, payload: aiohttp.StreamReader) -> None:
        if message.should_close:
            self.reusable = False
        self._payload = payload
        callback = self._callback
        if callback is not None:
            self._callback = None
            callback(message, payload, None)
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((message, payload))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.reusable = False
        parser = self._parser
        if parser is not None:
            try:
                parser.feed_eof()
            except Exception:  # an incomplete body: its reader gets the error below
                pass
        self._fail(aiohttp.ServerDisconnectedError(f"upstream closed the connection{f': {exc}' if exc else ''}"))
        super().connection_lost(exc)

    def _fail(self, error: Exception) -> None:
        callback = self._callback
        if callback is not None:
            self._callback = None
            callback(None, None, error)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        payload = self._payload
        if payload is not None and not payload.is_eof():
            payload.set_exception(aiohttp.ClientPayloadError(str(error)))

    def resume_reading(self, resume_parser: bool = True) -> None:
        """Called by the body reader after every read; only a connection that was paused has anything to
        resume (aiohttp's own would re-feed its parser and touch the transport each time)."""
        if self._reading_paused or self._buffer_paused:
            super().resume_reading(resume_parser)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def finish(self) -> None:
        self._parser = None
        self._heads = None
        self._waiter = None
        self._callback = None
        self._payload = None

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class LeanResponse:
    """What the relays read of an upstream response (the subset of aiohttp's ClientResponse they use)."""

    __slots__ = ("_connection", "_pool", "content", "headers", "reason", "status")

    def __init__(self, message: Any, content: aiohttp.StreamReader, connection: _Connection, pool: LeanPool) -> None:
        self.status: int = message.code
        self.reason: str = message.reason
        self.headers: CIMultiDictProxy[str] = message.headers
        self.content = content
        self._connection: _Connection | None = connection
        self._pool = pool

    def release(self) -> None:
        """Back to the pool when the body was read to its end on a reusable connection; else closed."""
        connection = self._connection
        if connection is None:
            return
        self._connection = None
        connection.finish()
        if connection.reusable and self.content.is_eof() and not self.content.exception():
            self._pool.put_back(connection)
        else:
            connection.close()


class LeanPool:
    """Idle keep-alive connections to one endpoint (TLS ones keyed by the client context they were made with)."""

    def __init__(
        self,
        host: str,
        port: int,
        expected_identity: str | None,
        connect_timeout: float,
        idle_timeout: float,
        origination: Origination | None = None,
        keepalive: Keepalive | None = None,
        unix_path: str | None = None,
    ) -> None:
        """`origination`: the cluster's TLS origination for an endpoint without identity (None: mesh or plain);
        `keepalive`: TCP keepalive for its connections (None: the system's defaults); `unix_path`: a Unix
        domain socket to connect to instead of host and port."""
        self._target = UpstreamTarget(host, port, expected_identity, connect_timeout, origination, keepalive, unix_path)
        self._authority = self._target.authority
        """The Host header of a request whose headers name none."""
        self._idle_timeout = idle_timeout
        self._idle: list[_Connection] = []
        """Idle connections, longest idle first (put back at the end, taken from the end)."""
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    async def request(
        self,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: bytes | None,
        context: ssl.SSLContext | None,
    ) -> LeanResponse:
        """Send one request; raises aiohttp.ClientError subclasses (ConnectionTimeoutError for the connect)."""
        payload = serialize(method, target, headers, body, self._authority)
        head = method == "HEAD"
        connection = self._take(context)
        if connection is not None and method in IDEMPOTENT:
            try:
                return await self._exchange(connection, payload, head)
            except aiohttp.ServerDisconnectedError:
                pass  # the server closed it while idle: one more try on a new connection
        if connection is None or method in IDEMPOTENT:
            connection = await self._connect(context)
        return await self._exchange(connection, payload, head)

    def send_now(
        self,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: bytes | None,
        context: ssl.SSLContext | None,
        answered: Callable[[LeanResponse | BaseException], None],
    ) -> Callable[[], None] | None:
        """Send on an idle connection without waiting: `answered` gets the response (its head, the body as it
        arrives) or the failure, from the connection's callbacks. None, and nothing sent, when no connection
        is idle; else a function that abandons the request (the connection closes, `answered` is not called).
        A kept connection the server closed before answering an idempotent request is replaced by a new one,
        as `request` does; `answered` then comes from a task."""
        connection = self._take(context)
        if connection is None:
            return None
        payload = serialize(method, target, headers, body, self._authority)
        transport = connection.transport
        assert transport is not None, "an idle connection that is not closing has its transport"

        def delivered(message: Any, content: aiohttp.StreamReader | None, error: BaseException | None) -> None:
            if error is None:
                assert content is not None, "a response comes with its body reader"
                answered(LeanResponse(message, content, connection, self))
                return
            connection.finish()
            connection.close()
            if isinstance(error, aiohttp.ServerDisconnectedError) and method in IDEMPOTENT:
                retry = asyncio.get_running_loop().create_task(self._anew(payload, method == "HEAD", context))
                retry.add_done_callback(lambda done: answered(_result_of(done)))
                return
            answered(error)

        connection.start_calling(method == "HEAD", delivered)
        connection.used = True
        transport.write(payload)

        def abandon() -> None:
            connection.finish()
            connection.close()

        return abandon

    async def _anew(self, payload: bytes, head: bool, context: ssl.SSLContext | None) -> LeanResponse:
        return await self._exchange(await self._connect(context), payload, head)

    async def _exchange(self, connection: _Connection, payload: bytes, head: bool) -> LeanResponse:
        waiter = connection.start(head)
        transport = connection.transport
        if transport is None or transport.is_closing():
            connection.finish()
            raise aiohttp.ServerDisconnectedError("upstream connection closed before the request")
        connection.used = True
        transport.write(payload)
        try:
            message, content = await waiter
        except BaseException:
            connection.finish()
            connection.close()
            raise
        return LeanResponse(message, content, connection, self)

    def _take(self, context: ssl.SSLContext | None) -> _Connection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()
            transport = connection.transport
            if transport is None or transport.is_closing() or connection.context is not context:
                connection.close()
                continue
            return connection
        return None

    async def _connect(self, context: ssl.SSLContext | None) -> _Connection:
        loop = asyncio.get_running_loop()
        factory: Callable[[], _Connection] = lambda: _Connection(loop)  # noqa: E731
        _, connection = await self._target.connect(factory, context)
        connection.context = context
        return connection

    def put_back(self, connection: _Connection) -> None:
        if self.closed:
            connection.close()
            return
        loop = connection.loop
        connection.idle_since = loop.time()
        self._idle.append(connection)
        if self._sweeper is None:  # one timer per pool, not one per request
            self._sweeper = loop.call_at(connection.idle_since + self._idle_timeout, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the connections idle for idleTimeout or longer; come back when the next one will be."""
        self._sweeper = None
        idle = self._idle
        deadline = loop.time() - self._idle_timeout
        expired = 0
        while expired < len(idle) and idle[expired].idle_since <= deadline:
            idle[expired].close()
            expired += 1
        del idle[:expired]
        if idle:
            self._sweeper = loop.call_at(idle[0].idle_since + self._idle_timeout, self._sweep, loop)

    def close(self) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def _result_of(task: asyncio.Task[LeanResponse]) -> LeanResponse | BaseException:
    if task.cancelled():
        return aiohttp.ServerDisconnectedError("upstream request cancelled")
    return task.exception() or task.result()


def serialize(method: str, target: str, headers: CIMultiDict[str], body: bytes | None, host: str) -> bytes:
    """The request head (and body) as sent: headers as given (`host` when they name none), Content-Length for
    the body we hold. aiohttp's (C) head writer refuses a CR or LF anywhere in the head with ValueError."""
    if body is not None or hdrs.HOST not in headers or (method in _BODY_METHODS and hdrs.CONTENT_LENGTH not in headers):
        if hdrs.HOST in headers:
            headers = headers.copy()
        else:  # Host first, as RFC 9110 asks of user agents
            headers = CIMultiDict([("Host", host), *headers.items()])
        if body is not None:
            headers[hdrs.CONTENT_LENGTH] = str(len(body))
        elif method in _BODY_METHODS:
            headers.setdefault(hdrs.CONTENT_LENGTH, "0")
    head: bytes = _serialize_headers(f"{method} {target} HTTP/1.1", headers)
    return head + body if body else head
