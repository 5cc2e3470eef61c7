"""WebSocket over HTTP/2 (RFC 8441) through a real sidecar: an extended CONNECT from the caller, the upstream
WebSocket handshake over HTTP/1.1, messages both ways, the close answered and the stream ended.

The client is the h2 library plus wsproto's client framing on real sockets; the app is an aiohttp WebSocket
server that never hears of HTTP/2.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, Event, RemoteSettingsChanged, ResponseReceived, StreamEnded
from h2.settings import SettingCodes
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, TextMessage

from services.proxy.sidecar import Sidecar
from tests.integration.proxy.catalog_config import apply, catalog_config

pytestmark = pytest.mark.integration


@pytest.fixture
async def echo_app() -> AsyncIterator[tuple[int, list[str]]]:
    """An aiohttp WebSocket server: echoes messages with a prefix, records what it saw, answers the close."""
    seen: list[str] = []

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        seen.append(f"open {request.path}")
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                seen.append(f"text {message.data}")
                await ws.send_str(f"echo:{message.data}")
            elif message.type is WSMsgType.BINARY:
                seen.append(f"binary {len(message.data)}")
                await ws.send_bytes(message.data[::-1])
        seen.append(f"closed {ws.close_code}")
        return ws

    app = web.Application()
    app.router.add_get("/ws", socket)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield port, seen
    await runner.cleanup()


class H2Client:
    """A client connection: the h2 state machine on a real socket, events read until one is wanted."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.events: list[Event] = []

    @classmethod
    async def open(cls, port: int) -> H2Client:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        client.h2.initiate_connection()
        client.flush()
        return client

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    async def until(self, wanted: Callable[[Event], bool]) -> Event:
        async with asyncio.timeout(10):
            while True:
                for index, event in enumerate(self.events):
                    if wanted(event):
                        return self.events.pop(index)
                data = await self.reader.read(65536)
                assert data, "the sidecar closed the connection"
                self.events.extend(self.h2.receive_data(data))
                for event in self.events:
                    if isinstance(event, DataReceived) and event.stream_id:
                        self.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
                self.flush()

    def connect(self, protocol: str) -> int:
        stream = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "CONNECT"),
            (":protocol", protocol),
            (":scheme", "http"),
            (":path", "/ws"),
            (":authority", "catalog"),
            ("sec-websocket-version", "13"),
        ]
        self.h2.send_headers(stream, headers)
        self.flush()
        return stream


def status_of(response: ResponseReceived) -> str:
    headers: dict[Any, Any] = dict(response.headers or [])
    return str(headers[":status"])


async def sidecar_in_front(make_sidecar: Any, bus: Any, app_port: int) -> Sidecar:
    sidecar: Sidecar = await make_sidecar("web", 1)
    await apply(bus, catalog_config(sidecar, [app_port]))
    return sidecar


async def test_a_websocket_over_http2_reaches_an_http1_app_and_closes_cleanly(
    echo_app: tuple[int, list[str]], make_sidecar: Any, bus: Any
) -> None:
    app_port, seen = echo_app
    sidecar = await sidecar_in_front(make_sidecar, bus, app_port)
    client = await H2Client.open(sidecar.listeners["outbound"].port)
    settings = await client.until(lambda e: isinstance(e, RemoteSettingsChanged))
    assert isinstance(settings, RemoteSettingsChanged)
    assert settings.changed_settings[SettingCodes.ENABLE_CONNECT_PROTOCOL].new_value == 1
    stream = client.connect("websocket")
    response = await client.until(lambda e: isinstance(e, ResponseReceived) and e.stream_id == stream)
    assert isinstance(response, ResponseReceived) and status_of(response) == "200"

    ws = Connection(ConnectionType.CLIENT)

    async def exchange(outgoing: Any) -> Any:
        data = ws.send(outgoing)
        size = client.h2.max_outbound_frame_size
        for start in range(0, len(data), size):  # the sidecar's window (1 MiB) holds all of it
            client.h2.send_data(stream, data[start : start + size])
        client.flush()
        parts: list[Any] = []
        while True:
            event = await client.until(lambda e: isinstance(e, DataReceived | StreamEnded) and e.stream_id == stream)
            if isinstance(event, StreamEnded):
                return None
            assert isinstance(event, DataReceived)
            ws.receive_data(event.data)
            for answer in ws.events():
                if not isinstance(answer, TextMessage | BytesMessage):
                    return answer
                parts.append(answer.data)
                if answer.message_finished:  # a message may come in several frames
                    if isinstance(answer, TextMessage):
                        return TextMessage(data="".join(parts))
                    return BytesMessage(data=b"".join(parts))

    answer = await exchange(TextMessage(data="hello"))
    assert isinstance(answer, TextMessage) and answer.data == "echo:hello"
    answer = await exchange(BytesMessage(data=b"\x00\x01\x02" * 30_000))
    assert isinstance(answer, BytesMessage) and bytes(answer.data) == b"\x02\x01\x00" * 30_000
    answer = await exchange(CloseConnection(code=1000, reason="bye"))
    assert isinstance(answer, CloseConnection) and answer.code == 1000
    await client.until(lambda e: isinstance(e, StreamEnded) and e.stream_id == stream)
    client.writer.close()
    assert seen == ["open /ws", "text hello", "binary 90000", "closed 1000"]


async def test_an_extended_connect_for_another_protocol_is_refused(
    echo_app: tuple[int, list[str]], make_sidecar: Any, bus: Any
) -> None:
    app_port, seen = echo_app
    sidecar = await sidecar_in_front(make_sidecar, bus, app_port)
    client = await H2Client.open(sidecar.listeners["outbound"].port)
    await client.until(lambda e: isinstance(e, RemoteSettingsChanged))
    stream = client.connect("connect-udp")
    response = await client.until(lambda e: isinstance(e, ResponseReceived) and e.stream_id == stream)
    assert isinstance(response, ResponseReceived) and status_of(response) == "501"
    client.writer.close()
    assert seen == []
