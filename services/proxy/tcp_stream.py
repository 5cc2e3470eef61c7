"""Byte streams under the TCP proxy: plain asyncio streams, and TLS run over a memory BIO so half-close works.

asyncio's own TLS transport cannot half-close: it has no `write_eof`, and a peer's close_notify closes the
whole connection. TCP pass-through needs both directions to end independently (a client that sends its
request and shuts down its write side still waits for the answer), so TLS here runs on an `ssl.SSLObject`
over plain streams: `write_eof` sends close_notify and a TCP FIN and keeps reading; a received close_notify
reads as end of stream and leaves writing open. Every `write` waits for `drain`, so memory stays bounded by
the transports' high-water marks plus one read chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Protocol

from shared.identity.spiffe import spiffe_id_of_peer_cert

CHUNK = 64 * 1024
HANDSHAKE_TIMEOUT = 10.0


class ByteStream(Protocol):
    async def read(self) -> bytes:
        """Up to CHUNK bytes; b"" at end of stream."""

    async def write(self, data: bytes) -> None:
        """Send and wait until the transport's buffer is below its high-water mark."""

    async def write_eof(self) -> None:
        """Half-close: no more data from us; reading goes on."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class PlainStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self) -> bytes:
        return await self.reader.read(CHUNK)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def write_eof(self) -> None:
        if self.writer.can_write_eof() and not self.writer.is_closing():
            self.writer.write_eof()

    def close(self) -> None:
        self.writer.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


class TlsStream(PlainStream):
    """TLS over a plain stream pair; `peer_spiffe_id` is read from the verified peer certificate, `alpn` from
    the handshake."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sslobj: ssl.SSLObject,
                 incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:  # fmt: skip
        super().__init__(reader, writer)
        self._ssl = sslobj
        self._in = incoming
        self._out = outgoing
        self._eof = False
        self.peer_spiffe_id: str | None = None
        self.alpn: str | None = None
        """The application protocol both sides agreed on in the handshake (None: none offered or in common)."""

    @property
    def ssl_object(self) -> ssl.SSLObject:
        return self._ssl

    @classmethod
    async def wrap(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        context: ssl.SSLContext,
        server_side: bool,
        timeout: float = HANDSHAKE_TIMEOUT,  # noqa: ASYNC109
        server_hostname: str | None = None,
    ) -> TlsStream:
        """Handshake as client or server; raises ssl.SSLError, ConnectionError or TimeoutError.

        `server_hostname` (client side): the SNI sent, and the name verified when the context checks host names."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        sslobj = context.wrap_bio(incoming, outgoing, server_side=server_side, server_hostname=server_hostname)
        stream = cls(reader, writer, sslobj, incoming, outgoing)
        async with asyncio.timeout(timeout):
            await stream._handshake()
        stream.peer_spiffe_id = spiffe_id_of_peer_cert(sslobj.getpeercert())
        stream.alpn = sslobj.selected_alpn_protocol()
        return stream

    async def _handshake(self) -> None:
        while True:
            try:
                self._ssl.do_handshake()
                await self._flush()
                return
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise ConnectionResetError("peer closed during the TLS handshake") from None

    async def _flush(self) -> None:
        pending = self._out.read()
        if pending:
            await super().write(pending)

    async def _fill(self) -> bool:
        """Feed the next ciphertext to the TLS object; False at TCP end of stream."""
        data = await self.reader.read(CHUNK)
        if not data:
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    async def read(self) -> bytes:
        while not self._eof:
            try:
                data = self._ssl.read(CHUNK)
            except ssl.SSLWantReadError:
                await self._flush()  # e.g. TLS 1.3 session tickets or key updates to answer
                if not await self._fill():
                    self._eof = True  # TCP FIN without close_notify: end of stream all the same
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""
            if not data:
                self._eof = True
                break
            return data
        return b""

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._ssl.write(view[:CHUNK])
            view = view[written:]
            await self._flush()

    async def write_eof(self) -> None:
        """close_notify, then a TCP FIN; the peer's data keeps flowing to `read`."""
        if self.writer.is_closing():
            return
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLError):
            self._ssl.unwrap()
        await self._flush()
        await super().write_eof()


class WrappedStream:
    """A stream over another one: writes, half-close and close go straight to it; subclasses change `read`."""

    def __init__(self, inner: ByteStream) -> None:
        self._inner = inner

    async def read(self) -> bytes:
        return await self._inner.read()

    async def write(self, data: bytes) -> None:
        await self._inner.write(data)

    async def write_eof(self) -> None:
        await self._inner.write_eof()

    def close(self) -> None:
        self._inner.close()

    async def wait_closed(self) -> None:
        await self._inner.wait_closed()


class PrefixedStream(WrappedStream):
    """A stream whose first read gives back bytes already taken from it (a gateway's peeked ClientHello)."""

    def __init__(self, prefix: bytes, inner: ByteStream) -> None:
        super().__init__(inner)
        self._prefix = prefix

    async def read(self) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            return data
        return await self._inner.read()
