"""Peer metadata exchange on a meshed TCP connection, between the mTLS handshake and the relay.

Only when both sidecars negotiated ALPN `istio-peer-exchange` (shared/peer_metadata.py frames the blocks):
the caller's side sends its block and waits for the callee's; the callee's side reads the caller's block,
then sends its own. A peer's block is split off the byte stream by `PeerBlockStream`, so it never reaches
an application. Telemetry fails open: a missing, malformed, oversized or late block yields no metadata and
the connection goes on; bytes that do not start with the magic are application data and pass unchanged,
and the rest of a block that arrives after the deadline is still dropped as it comes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from services.proxy.tcp_stream import TlsStream, WrappedStream
from shared.peer_metadata import ALPN_PEER_EXCHANGE, BLOCK_HEADER, BLOCK_MAGIC, MAX_ENCODED

log = logging.getLogger(__name__)

EXCHANGE_TIMEOUT = 1.0
"""How long a side waits for the peer's block before going on without it."""
_MAGIC = BLOCK_HEADER.pack(BLOCK_MAGIC, 0)[:4]


class BlockParser:
    """Splits the peer's block off the front of a byte stream; `feed` returns the application bytes after it."""

    def __init__(self, limit: int = MAX_ENCODED) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._payload_left: int | None = None
        self._oversized = False
        self.done = False
        self.payload: bytes | None = None
        """The block's payload once done; None when there was no block or it was over the limit."""

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return data
        if self._payload_left is None:
            self._buffer += data
            if not _MAGIC.startswith(bytes(self._buffer[:4])):
                return self._finish(None, bytes(self._buffer))  # not a block: all of it is the app's
            if len(self._buffer) < BLOCK_HEADER.size:
                return b""
            _magic, length = BLOCK_HEADER.unpack_from(self._buffer)
            data = bytes(self._buffer[BLOCK_HEADER.size :])
            self._buffer = bytearray()
            self._payload_left = length
            self._oversized = length > self._limit  # skipped as it passes, never held
        taken = min(self._payload_left, len(data))
        if not self._oversized:
            self._buffer += data[:taken]
        self._payload_left -= taken
        if self._payload_left:
            return b""
        return self._finish(None if self._oversized else bytes(self._buffer), data[taken:])

    def _finish(self, payload: bytes | None, rest: bytes) -> bytes:
        self.done = True
        self.payload = payload
        self._buffer = bytearray()
        return rest


class PeerBlockStream(WrappedStream):
    """A TLS stream whose peer's first bytes are its metadata block, kept out of `read`."""

    def __init__(self, inner: TlsStream) -> None:
        super().__init__(inner)
        self._parser = BlockParser()
        self._ready = b""
        self.peer_spiffe_id = inner.peer_spiffe_id

    async def receive_block(self, timeout: float = EXCHANGE_TIMEOUT) -> str | None:  # noqa: ASYNC109
        """The peer's metadata value, or None when it sent none in time or it is not a well-formed block."""
        try:
            async with asyncio.timeout(timeout):
                while not self._parser.done:
                    data = await self._inner.read()
                    if not data:
                        break
                    self._ready += self._parser.feed(data)
        except (TimeoutError, OSError, ssl.SSLError) as err:
            log.debug("TCP peer metadata not received: %s", err or "timeout")
            return None
        payload = self._parser.payload
        try:
            return payload.decode("ascii") if payload else None
        except UnicodeDecodeError:
            return None

    async def read(self) -> bytes:
        if self._ready:
            data, self._ready = self._ready, b""
            return data
        while True:
            data = await self._inner.read()
            if not data:
                return b""
            data = self._parser.feed(data)
            if data:
                return data


def negotiated(stream: TlsStream) -> bool:
    return stream.alpn == ALPN_PEER_EXCHANGE


async def as_caller(stream: TlsStream, own_block: bytes) -> tuple[PeerBlockStream, str | None]:
    """Outbound: our block first, then the callee's (None when it sends none in time)."""
    wrapped = PeerBlockStream(stream)
    try:
        await stream.write(own_block)
    except (OSError, ssl.SSLError) as err:
        log.debug("TCP peer metadata not sent: %s", err)
        return wrapped, None
    return wrapped, await wrapped.receive_block()


async def as_callee(stream: TlsStream, own_block: bytes) -> tuple[PeerBlockStream, str | None]:
    """Inbound: the caller's block (None when it sends none in time), then ours."""
    wrapped = PeerBlockStream(stream)
    value = await wrapped.receive_block()
    try:
        await stream.write(own_block)
    except (OSError, ssl.SSLError) as err:
        log.debug("TCP peer metadata not sent: %s", err)
    return wrapped, value
