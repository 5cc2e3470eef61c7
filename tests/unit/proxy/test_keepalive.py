"""connectionPool.tcp.tcpKeepalive: the model, and the options on the sockets all three upstream clients open."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from multidict import CIMultiDict
from pydantic import ValidationError

from services.proxy.h1client import LeanPool
from services.proxy.keepalive import Keepalive
from services.proxy.upstream import PoolSettings
from shared.model.destination_rule import ConnectionPoolSettings, TcpKeepalive

SETTINGS = TcpKeepalive.model_validate({"probes": 4, "time": "30s", "interval": "2.5s"})


def _options(sock: Any) -> tuple[int, int, int, int]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


def test_times_round_up_to_whole_seconds_and_unset_fields_stay_unset() -> None:
    assert Keepalive.of(SETTINGS) == Keepalive(idle=30, interval=3, probes=4)
    assert Keepalive.of(TcpKeepalive()) == Keepalive()
    assert Keepalive.of(None) is None


def test_values_linux_refuses_are_refused_with_the_field() -> None:
    for raw, field in (({"time": "0.5s"}, "time"), ({"interval": "10h"}, "interval"), ({"probes": 200}, "probes")):
        with pytest.raises(ValidationError) as info:
            TcpKeepalive.model_validate(raw)
        assert info.value.errors()[0]["loc"] == (field,)


def test_the_pool_settings_carry_it() -> None:
    pool = ConnectionPoolSettings.model_validate({"tcp": {"tcpKeepalive": {"time": "30s"}}})
    assert PoolSettings.of("c", pool).keepalive == Keepalive(idle=30)
    assert PoolSettings.of("c", None).keepalive is None


def test_the_socket_factory_sets_the_options_before_connecting() -> None:
    factory = Keepalive(idle=30, interval=3, probes=4).socket_factory()
    sock = factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 0)))
    try:
        assert _options(sock) == (1, 30, 3, 4)
    finally:
        sock.close()


@pytest.fixture
async def server_port() -> AsyncIterator[int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_the_lean_client_connects_with_the_options(server_port: int) -> None:
    pool = LeanPool("127.0.0.1", server_port, None, 5.0, 60.0, None, Keepalive(idle=45, interval=5, probes=3))
    response = await pool.request("GET", "/", CIMultiDict({"Host": "svc"}), None, None)
    assert response.status == 200
    connection = response._connection
    assert connection is not None and connection.transport is not None
    assert _options(connection.transport.get_extra_info("socket")) == (1, 45, 5, 3)
    response.release()
    pool.close()
