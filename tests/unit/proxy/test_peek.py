"""Telling TLS from plain text by the first bytes, and which transports each mTLS mode admits."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from services.proxy.peek import admits, looks_like_tls, peek, start_peeking_listener
from services.proxy.request_view import Reply, RequestView
from shared.model.peer_authentication import MtlsMode


@pytest.mark.parametrize(
    ("first", "tls"),
    [(b"\x16\x03\x01\x02\x00", True), (b"\x16\x03", True), (b"GET / HTTP/1.1", False), (b"\x16", False), (b"", False)],
)
def test_client_hello_is_recognised(first: bytes, tls: bool) -> None:
    assert looks_like_tls(first) is tls


@pytest.mark.parametrize(
    ("mode", "tls", "admitted"),
    [
        (MtlsMode.STRICT, True, True),
        (MtlsMode.STRICT, False, False),
        (MtlsMode.PERMISSIVE, True, True),
        (MtlsMode.PERMISSIVE, False, True),
        (MtlsMode.DISABLE, True, False),
        (MtlsMode.DISABLE, False, True),
    ],
)
def test_modes_admit(mode: MtlsMode, tls: bool, admitted: bool) -> None:
    assert admits(mode, tls) is admitted


def test_unset_is_not_a_resolved_mode() -> None:
    with pytest.raises(ValueError, match="not a resolved mode"):
        admits(MtlsMode.UNSET, True)


async def test_peek_leaves_the_bytes_and_waits_for_a_split_first_segment() -> None:
    left, right = socket.socketpair()
    left.setblocking(False)
    try:
        right.send(b"\x16")
        pending = asyncio.create_task(peek(left))
        await asyncio.sleep(0.02)
        assert not pending.done()
        right.send(b"\x03rest")
        assert await asyncio.wait_for(pending, 10) == b"\x16\x03"
        assert left.recv(16) == b"\x16\x03rest"
        right.close()
        assert await asyncio.wait_for(peek(left), 10) == b""
    finally:
        left.close()
        right.close()


async def test_an_accepted_connection_has_tcp_nodelay() -> None:
    """asyncio leaves Nagle on for sockets accepted from `socket.create_server` (proto 0); the relay's small
    writes after the TLS handshake would then wait out the peer's delayed ACK."""
    handed: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def tcp(conn: socket.socket, _tls: bool) -> None:
        handed.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        conn.close()

    async def never(_view: RequestView) -> Reply:
        raise AssertionError("the TCP handler takes every connection")

    context = ssl.create_default_context
    listener = await start_peeking_listener("inbound", never, "127.0.0.1", 0, context, lambda: MtlsMode.PERMISSIVE, tcp)
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"plain")
        assert await asyncio.wait_for(handed, 10) != 0
        writer.close()
    finally:
        await listener.close()
