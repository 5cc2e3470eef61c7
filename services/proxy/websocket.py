"""Branch of the outbound path for WebSocket upgrades: handshake upstream first, then relay frames both ways.

Istio allows WebSocket upgrades on every HTTP route. The proxy opens the upstream WebSocket (through the
cluster's pool: mTLS and the peer's SPIFFE ID, or TLS origination, are checked as for any request) before it accepts the
app's, so a refused upstream handshake reaches the app as that HTTP status, and an unreachable one as 503
UF. Then it relays messages (text, binary, ping, pong, close with its code) until either side closes.
Relaying is per message, so no extension (permessage-deflate) is negotiated on either side, and the
requested subprotocols are offered upstream and the upstream's choice is accepted downstream. The route
timeout bounds the upstream handshake only, not the life of the connection; the cluster counts the
connection as one request in flight until it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import TYPE_CHECKING, cast

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from services.proxy.errors import ProxyError, UpstreamConnectFailure
from services.proxy.request_view import Relayed, Reply, RequestView

if TYPE_CHECKING:
    from services.proxy.h2_websocket import H2WebSocket
    from services.proxy.h2server import H2Request

# Set by the client library for each handshake; the app's own values must not be forwarded.
_HANDSHAKE_HEADERS = (
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
)


def is_upgrade(request: RequestView) -> bool:
    connection = ",".join(request.headers.getall("Connection", [])).lower()
    return "upgrade" in connection and request.headers.get("Upgrade", "").lower() == "websocket"


class HandshakeRefused(ProxyError):
    """The upstream answered the handshake with a plain HTTP status."""

    flag = "-"

    def __init__(self, status: int) -> None:
        super().__init__(f"upstream refused the WebSocket handshake with {status}")
        self.status = status


async def relay(
    request: RequestView,
    session: aiohttp.ClientSession,
    ssl_arg: ssl.SSLContext | bool,
    url: URL,
    headers: CIMultiDict[str],
    handshake_timeout: float | None,
    server_hostname: str | None = None,
) -> Reply:
    """Handshake upstream, accept downstream, relay until closed; raises ProxyError before accepting. A caller
    on HTTP/2 (an extended CONNECT, RFC 8441) is accepted with 200 on its stream (h2_websocket.py); any other
    is aiohttp's request, upgraded with 101."""
    protocols = tuple(
        token.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", [])
        for token in value.split(",")
        if token.strip()
    )
    forwarded = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _HANDSHAKE_HEADERS)
    try:
        async with asyncio.timeout(handshake_timeout):
            upstream = await session.ws_connect(
                url,
                headers=forwarded,
                protocols=protocols,
                ssl=ssl_arg,
                server_hostname=server_hostname,
                autoclose=False,
                autoping=False,
                compress=0,
                max_msg_size=0,
            )
    except aiohttp.WSServerHandshakeError as err:
        raise HandshakeRefused(err.status) from err
    except (aiohttp.ClientError, TimeoutError) as err:
        raise UpstreamConnectFailure(f"upstream {url.authority} WebSocket connect error: {err!r}") from err
    downstream: web.WebSocketResponse | H2WebSocket
    reply: Reply
    if getattr(request, "websocket", False):
        from services.proxy.h2_websocket import H2WebSocket  # only HTTP/2 callers need it

        downstream = H2WebSocket(cast("H2Request", request), upstream.protocol)
        reply = Relayed(200, CIMultiDict(), None, 0)
    else:
        downstream = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoclose=False,
            autoping=False,
            compress=False,
            max_msg_size=0,
        )
        reply = downstream
    try:
        if isinstance(downstream, web.WebSocketResponse):
            await downstream.prepare(cast(web.BaseRequest, request))  # any other view is aiohttp's own request
        else:
            downstream.prepare()
        up = asyncio.ensure_future(_pump(upstream, downstream))
        down = asyncio.ensure_future(_pump(downstream, upstream))
        try:
            done, _ = await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in (up, down):
                pump.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
        first = up if up in done else down
        code, reason = first.result() if not first.cancelled() and first.exception() is None else (_GOING_AWAY, "")
        # The side that closed first gets its close answered; the other side is closed with the same code.
        closed_first, other = (upstream, downstream) if first is up else (downstream, upstream)
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
            await other.close(code=code, message=reason.encode())
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
            await closed_first.close(code=code)
    finally:
        await upstream.close()
        if not downstream.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await downstream.close()
    return reply


_GOING_AWAY = int(aiohttp.WSCloseCode.GOING_AWAY)


async def _pump(
    source: aiohttp.ClientWebSocketResponse | web.WebSocketResponse | H2WebSocket,
    sink: aiohttp.ClientWebSocketResponse | web.WebSocketResponse | H2WebSocket,
) -> tuple[int, str]:
    """Copy messages until `source` closes; returns the close code and reason to pass on."""
    while True:
        message = await source.receive()
        kind = message.type
        if kind is aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif kind is aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif kind is aiohttp.WSMsgType.PING:
            await sink.ping(message.data)
        elif kind is aiohttp.WSMsgType.PONG:
            await sink.pong(message.data)
        elif kind is aiohttp.WSMsgType.CLOSE:
            return int(message.data or aiohttp.WSCloseCode.OK), message.extra or ""
        else:  # CLOSING, CLOSED, ERROR: the source is gone
            return _GOING_AWAY, ""
