"""HTTP/2 plumbing shared by the server front (h2server.py) and the upstream client (h2client.py): one `h2`
state machine per connection, its bytes on an asyncio transport, bodies as aiohttp StreamReaders, and flow
control both ways.

Receiving: each stream's body is a StreamReader whose "protocol" is the stream's `InboundFlow`. Bytes
received are handed back to the peer (WINDOW_UPDATE) at once while the reader keeps up; once the reader
holds more than its high-water mark (the consumer is slower than the peer), they are owed until it has
drained, so a stream's buffer stays within about two read limits plus one stream window. The connection's
window is large, so one slow stream does not stall the others.

Sending: `send_body` writes DATA frames no larger than the peer's stream and connection windows and its frame
size allow, waiting for WINDOW_UPDATE when a window is closed, and for the transport to drain when its
buffer is full.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import cast

from aiohttp import StreamReader
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import H2Error
from h2.settings import SettingCodes, Settings
from multidict import CIMultiDict

log = logging.getLogger(__name__)

STREAM_WINDOW = 1024 * 1024
"""The receive window each stream advertises."""
CONNECTION_WINDOW = 32 * 1024 * 1024
"""The connection's receive window (larger than the streams', so a stalled stream leaves room to the rest)."""
READ_LIMIT = 2**16
SMALL_WRITE = 16 * 1024
"""DATA frames smaller than this wait for the loop turn's single write; larger ones are written at once."""
MAX_CONCURRENT_STREAMS = 1000
MAX_HEADER_LIST = 64 * 1024
CONNECTION_SPECIFIC = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "te"}
)
"""Header names HTTP/2 forbids (RFC 9113 8.2.2; `te` is allowed only as `trailers`, set apart) or carries as a
pseudo-header (`host` is `:authority`)."""


def configuration(client_side: bool) -> H2Configuration:
    """Header blocks as bytes; what the peer sends is validated (RFC 9113 8.2), what we send is not checked again:
    `headers_out` already lower-cases names and drops connection-specific fields, pseudo-headers come first, and
    HPACK frames every field by length, so a stray byte in a value cannot smuggle anything (the peer refuses it)."""
    return H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_inbound_headers=True,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )


def new_connection(client_side: bool) -> H2Connection:
    """A connection that advertises our windows and stream limit (sent by `initiate_connection`)."""
    connection = H2Connection(config=configuration(client_side))
    values = {
        SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
        SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
    }
    if client_side:
        values[SettingCodes.ENABLE_PUSH] = 0
    else:  # WebSocket over HTTP/2 (RFC 8441): clients may send an extended CONNECT
        values[SettingCodes.ENABLE_CONNECT_PROTOCOL] = 1
    connection.local_settings = Settings(client=client_side, initial_values=values)
    return connection


def text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def raw(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def headers_out(headers: CIMultiDict[str]) -> list[tuple[bytes, bytes]]:
    """A message's regular headers as HTTP/2 sends them: names in lower case, connection-specific ones left out."""
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in CONNECTION_SPECIFIC:
            continue
        out.append((raw(lowered), raw(value)))
    return out


def headers_in(pairs: Iterable[tuple[bytes, bytes]]) -> tuple[dict[str, str], CIMultiDict[str]]:
    """A received header block: its pseudo-headers, and its regular headers (cookies split by HTTP/2 rejoined)."""
    pseudo: dict[str, str] = {}
    regular: CIMultiDict[str] = CIMultiDict()
    cookies: list[str] = []
    for name, value in pairs:
        key = text(name)
        if key.startswith(":"):
            pseudo[key] = text(value)
        elif key == "cookie":
            cookies.append(text(value))
        else:
            regular.add(key, text(value))
    if cookies:
        regular["cookie"] = "; ".join(cookies)
    return pseudo, regular


class InboundFlow:
    """The flow-control side of one stream's body reader (the StreamReader's "protocol")."""

    __slots__ = ("_endpoint", "_owed", "_reading_paused", "stream_id")

    def __init__(self, endpoint: H2Endpoint, stream_id: int) -> None:
        self._endpoint = endpoint
        self.stream_id = stream_id
        self._owed = 0
        self._reading_paused = False

    @property
    def connected(self) -> bool:
        return not self._endpoint.closed

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._reading_paused = False
        if self._owed:
            owed, self._owed = self._owed, 0
            self._endpoint.acknowledge(self.stream_id, owed)

    def received(self, length: int) -> None:
        """`length` flow-controlled bytes of this stream arrived (fed to the reader)."""
        if self._reading_paused:
            self._owed += length
        elif length:
            self._endpoint.acknowledge(self.stream_id, length)


class H2Stream:
    """One stream's state on either side: its body reader, the trailers received, a waiter for window."""

    __slots__ = ("body", "error", "flow", "stream_id", "trailers", "window_waiter")

    def __init__(self, endpoint: H2Endpoint, stream_id: int) -> None:
        self.stream_id = stream_id
        self.flow = InboundFlow(endpoint, stream_id)
        self.body = StreamReader(self.flow, READ_LIMIT, loop=endpoint.loop)  # type: ignore[arg-type]
        self.trailers: CIMultiDict[str] | None = None
        self.window_waiter: asyncio.Future[None] | None = None
        self.error: BaseException | None = None
        """Why the stream ended early (reset by the peer, connection lost); None while it is usable."""

    def wake(self) -> None:
        waiter = self.window_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, error: BaseException) -> None:
        """The stream is gone: the body reader and any sender waiting for window see `error`."""
        if self.error is None:
            self.error = error
        if not self.body.is_eof():
            self.body.set_exception(error)
        self.wake()


class H2Endpoint(asyncio.Protocol):
    """An HTTP/2 connection on an asyncio transport: the h2 state machine, its streams, writes and windows."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client_side: bool) -> None:
        self.loop = loop
        self.h2 = new_connection(client_side)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.closed = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._idle_timer: asyncio.TimerHandle | None = None
        self._flush_scheduled = False

    def idle_after(self, seconds: float) -> None:
        """Close the connection once it has had no stream for `seconds` (a new stream calls `busy_again`)."""
        if self._idle_timer is None and not self.closed and seconds > 0:
            self._idle_timer = self.loop.call_later(seconds, self._idle_expired)

    def busy_again(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if self.streams or self.closed:
            return
        try:
            self.h2.close_connection()
        except H2Error:
            pass
        self.close_transport()

    def start(self, transport: asyncio.BaseTransport) -> None:
        """Send our preface and settings, and open the connection's window."""
        self.transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is no asyncio subclass)
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - self.h2.inbound_flow_control_window)
        self.flush()

    def flush(self) -> None:
        """Write what the state machine has queued, once per loop iteration: the frames of every operation made
        in this turn of the loop (headers, data, window updates, several streams' answers) go out in one write,
        one TLS record and one system call instead of one each."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_now)

    def close_transport(self) -> None:
        """Close the connection after writing what is queued (a GOAWAY, a last RST_STREAM)."""
        self._flush_now()
        if self.transport is not None:
            self.transport.close()

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        data = self.h2.data_to_send()
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def acknowledge(self, stream_id: int, length: int) -> None:
        """Give `length` received bytes back to the peer's windows (the connection's too)."""
        if self.closed:
            return
        try:
            self.h2.acknowledge_received_data(length, stream_id)
        except H2Error:  # the stream closed meanwhile (h2 has given the connection's share back already)
            pass
        self.flush()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def drained(self) -> None:
        if not self._write_paused or self.closed:
            return
        waiter = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def window_updated(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.wake()
            return
        for stream in self.streams.values():
            stream.wake()

    async def send_body(self, stream: H2Stream, body: bytes | StreamReader | None) -> int:
        """Write a request's or response's body on `stream` (without ending it); returns the bytes sent."""
        if body is None:
            return 0
        if isinstance(body, bytes | bytearray | memoryview):
            return await self._send_data(stream, bytes(body))
        sent = 0
        async for chunk in body.iter_any():
            sent += await self._send_data(stream, chunk)
        return sent

    async def _send_data(self, stream: H2Stream, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if stream.error is not None:
                raise stream.error
            if self.closed:
                raise ConnectionResetError("HTTP/2 connection closed")
            try:
                window = min(self.h2.local_flow_control_window(stream.stream_id), self.h2.max_outbound_frame_size)
            except H2Error as err:
                raise ConnectionResetError(f"HTTP/2 stream {stream.stream_id} closed: {err}") from err
            if window <= 0:
                stream.window_waiter = self.loop.create_future()
                await stream.window_waiter
                stream.window_waiter = None
                continue
            piece = view[:window]
            self.h2.send_data(stream.stream_id, piece.tobytes())
            view = view[len(piece) :]
            if len(piece) < SMALL_WRITE:
                self.flush()  # joins the other frames of this loop turn
            else:
                self._flush_now()  # a large body is written as it goes, not gathered in memory
            if self._write_paused:
                await self.drained()
        return len(data)

    def end_stream(self, stream: H2Stream, trailers: CIMultiDict[str] | None = None) -> None:
        """End what we send on `stream`: with trailers as a last HEADERS frame, else an empty DATA frame."""
        if stream.error is not None or self.closed:
            return
        try:
            if trailers:
                self.h2.send_headers(stream.stream_id, headers_out(trailers), end_stream=True)
            else:
                self.h2.end_stream(stream.stream_id)
        except H2Error as err:
            log.debug("stream %d: end: %s", stream.stream_id, err)
        self.flush()

    def reset(self, stream: H2Stream, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        """Abandon `stream` (RST_STREAM) unless it is closed already."""
        self.streams.pop(stream.stream_id, None)
        if self.closed:
            return
        try:
            self.h2.reset_stream(stream.stream_id, error_code=code)
        except H2Error:
            return
        self.flush()

    def lost(self, error: BaseException) -> None:
        """The connection is gone: every stream fails with `error`, every writer waiting is released."""
        self.closed = True
        self.busy_again()
        for stream in list(self.streams.values()):
            stream.fail(error)
        self.streams.clear()
        self.resume_writing()
