"""The listeners' sockets: connections they accept send small writes at once (TCP_NODELAY), under both loops."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from services.proxy.listeners import tcp_server_socket


async def _accepted_nodelay() -> int:
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    sock = tcp_server_socket("127.0.0.1", 0)
    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        try:
            return await asyncio.wait_for(accepted, 5)
        finally:
            writer.close()
    finally:
        server.close()


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_accepted_connections_have_tcp_nodelay(loop_factory: object) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:  # type: ignore[arg-type]
        assert runner.run(_accepted_nodelay()) != 0


def test_the_port_is_refused_with_the_address_when_taken() -> None:
    taken = tcp_server_socket("127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match=r"127\.0\.0\.1"):
            tcp_server_socket("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
