"""WebSocket over HTTP/2 (RFC 8441), the caller's end: an extended CONNECT stream carrying WebSocket frames.

The HTTP/2 front advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and hands an extended CONNECT for `:protocol
websocket` to the filter chain as the HTTP/1.1 upgrade it stands for (h2server.py), so routing, policy and the
upstream handshake are those of any WebSocket (websocket.py). Once the upstream has accepted, this end answers
200 (RFC 8441 has no Sec-WebSocket-Key / Accept exchange) and speaks WebSocket frames on the stream, with
wsproto's state machine, through the interface websocket.relay uses of aiohttp's WebSocketResponse: whole
messages in (fragments joined), messages, pings, pongs and the close out.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import aiohttp
from multidict import CIMultiDict
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Message, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    from services.proxy.h2server import H2Request

_READ = 2**16


class H2WebSocket:
    """One accepted WebSocket on an HTTP/2 stream."""

    def __init__(self, request: H2Request, protocol: str | None) -> None:
        self._request = request
        self._protocol = protocol
        self._ws = Connection(ConnectionType.SERVER)
        self._received: deque[aiohttp.WSMessage] = deque()
        self._parts: list[str | bytes] = []
        self.closed = False

    def prepare(self) -> None:
        """Accept: 200, with the subprotocol the upstream chose."""
        headers: CIMultiDict[str] = CIMultiDict()
        if self._protocol:
            headers["sec-websocket-protocol"] = self._protocol
        self._request.open_tunnel(headers)

    async def receive(self) -> aiohttp.WSMessage:
        while not self._received:
            data = await self._request.content.read(_READ)
            if not data:  # the caller ended the stream without a close frame
                return aiohttp.WSMessage(aiohttp.WSMsgType.CLOSED, None, None)
            try:
                self._ws.receive_data(data)
                for event in self._ws.events():
                    self._translate(event)
            except RemoteProtocolError as err:
                return aiohttp.WSMessage(aiohttp.WSMsgType.ERROR, err, None)
        return self._received.popleft()

    def _translate(self, event: Event) -> None:
        if isinstance(event, Message):
            self._parts.append(event.data)
            if not event.message_finished:
                return
            parts, self._parts = self._parts, []
            if isinstance(event, TextMessage):
                self._received.append(aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, "".join(map(str, parts)), None))
            elif isinstance(event, BytesMessage):
                joined = b"".join(part for part in parts if isinstance(part, bytes | bytearray))
                self._received.append(aiohttp.WSMessage(aiohttp.WSMsgType.BINARY, joined, None))
        elif isinstance(event, Ping):
            self._received.append(aiohttp.WSMessage(aiohttp.WSMsgType.PING, bytes(event.payload), None))
        elif isinstance(event, Pong):
            self._received.append(aiohttp.WSMessage(aiohttp.WSMsgType.PONG, bytes(event.payload), None))
        elif isinstance(event, CloseConnection):
            self._received.append(aiohttp.WSMessage(aiohttp.WSMsgType.CLOSE, event.code, event.reason or ""))

    async def _send(self, event: Event) -> None:
        await self._request.send_data(self._ws.send(event))

    async def send_str(self, data: str) -> None:
        await self._send(TextMessage(data=data))

    async def send_bytes(self, data: bytes) -> None:
        await self._send(BytesMessage(data=data))

    async def ping(self, message: bytes = b"") -> None:
        await self._send(Ping(payload=message))

    async def pong(self, message: bytes = b"") -> None:
        await self._send(Pong(payload=message))

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        """Send the close frame (answering the caller's, or first), then end the stream."""
        if self.closed:
            return False
        self.closed = True
        try:
            if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                await self._send(CloseConnection(code=code, reason=message.decode("utf-8", "replace") or None))
        except (LocalProtocolError, ConnectionError):
            pass
        finally:
            self._request.end()
        return True
