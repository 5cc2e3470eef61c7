"""The server name a TLS client asks for, read from its ClientHello without taking part in the handshake.

A gateway's PASSTHROUGH server routes each connection by the SNI of its first flight and then relays every
byte, the ClientHello included, to the destination, which terminates TLS itself. `read_client_hello` reads
the TLS records that carry the ClientHello (RFC 8446 section 4.1.2; one record usually, several when large)
and returns them whole; `server_name` finds the `server_name` extension (RFC 6066 section 3) in them. A first
flight that is not a TLS handshake, or is cut short, gives None: the connection is refused (no SNI, no route).
"""

from __future__ import annotations

import asyncio

RECORD_HEADER = 5
HANDSHAKE = 0x16
CLIENT_HELLO = 0x01
SERVER_NAME = 0x0000
HOST_NAME = 0x00
MAX_HELLO = 64 * 1024
"""A ClientHello larger than this (far beyond any real one) is not read further."""


class NotClientHello(ValueError):
    """The first bytes are not a TLS ClientHello (or not a whole one)."""


def _handshake_bytes(records: bytes) -> bytes:
    """The handshake payload of the consecutive handshake records in `records`."""
    payload = bytearray()
    offset = 0
    while offset + RECORD_HEADER <= len(records):
        kind, length = records[offset], int.from_bytes(records[offset + 3 : offset + 5], "big")
        if kind != HANDSHAKE:
            raise NotClientHello(f"record type {kind} is not a handshake")
        payload += records[offset + RECORD_HEADER : offset + RECORD_HEADER + length]
        offset += RECORD_HEADER + length
    return bytes(payload)


async def read_client_hello(reader: asyncio.StreamReader) -> bytes:
    """The records holding the whole ClientHello, as received; raises NotClientHello, or IncompleteReadError when
    the stream ends first (callers bound the wait with asyncio.timeout)."""
    received = bytearray()
    while True:
        header = await reader.readexactly(RECORD_HEADER)
        if header[0] != HANDSHAKE:
            raise NotClientHello(f"record type {header[0]} is not a handshake: not TLS")
        length = int.from_bytes(header[3:5], "big")
        received += header + await reader.readexactly(length)
        handshake = _handshake_bytes(bytes(received))
        if len(handshake) >= 4:
            if handshake[0] != CLIENT_HELLO:
                raise NotClientHello(f"handshake type {handshake[0]} is not a ClientHello")
            if len(handshake) >= 4 + int.from_bytes(handshake[1:4], "big"):
                return bytes(received)
        if len(received) > MAX_HELLO:
            raise NotClientHello("ClientHello larger than 64 KiB")


def _vector(data: bytes, offset: int, width: int) -> tuple[bytes, int]:
    if offset + width > len(data):
        raise NotClientHello("ClientHello cut short")
    length = int.from_bytes(data[offset : offset + width], "big")
    end = offset + width + length
    if end > len(data):
        raise NotClientHello("ClientHello cut short")
    return data[offset + width : end], end


def server_name(records: bytes) -> str | None:
    """The host name the ClientHello in `records` asks for (lower case), or None when it names none."""
    handshake = _handshake_bytes(records)
    if len(handshake) < 4 or handshake[0] != CLIENT_HELLO:
        raise NotClientHello("not a ClientHello")
    hello = handshake[4 : 4 + int.from_bytes(handshake[1:4], "big")]
    offset = 2 + 32  # legacy_version, random
    _, offset = _vector(hello, offset, 1)  # legacy_session_id
    _, offset = _vector(hello, offset, 2)  # cipher_suites
    _, offset = _vector(hello, offset, 1)  # legacy_compression_methods
    if offset == len(hello):
        return None  # no extensions
    extensions, _ = _vector(hello, offset, 2)
    position = 0
    while position + 4 <= len(extensions):
        kind = int.from_bytes(extensions[position : position + 2], "big")
        body, position = _vector(extensions, position + 2, 2)
        if kind != SERVER_NAME:
            continue
        names, _ = _vector(body, 0, 2)
        at = 0
        while at + 3 <= len(names):
            name_type = names[at]
            name, at = _vector(names, at + 1, 2)
            if name_type == HOST_NAME:
                return name.decode("ascii", errors="replace").lower().rstrip(".")
        return None
    return None


def covers(pattern: str, name: str) -> bool:
    """Whether an SNI route name (`*`, `*.example.com`, or a name) covers a client's SNI."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return pattern == name
