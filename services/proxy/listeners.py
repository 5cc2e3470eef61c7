"""How every proxy listener is served: aiohttp's low-level server on one address (port 0: any free port),
with the pass-through front (h1server.py) in front of it on the data-path listeners."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web

from services.proxy.h1server import ImmediateHandler, PassThroughFront
from services.proxy.request_view import ViewHandler

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
SHUTDOWN_TIMEOUT = 2.0


@dataclass
class Listener:
    name: str
    runner: web.ServerRunner
    host: str
    port: int
    front: PassThroughFront | None = None
    server: asyncio.AbstractServer | None = None

    def open_connections(self) -> int:
        """Downstream connections held open, on either front."""
        connections = getattr(self.runner.server, "connections", None)
        count = len(connections) if connections is not None else 0
        return count + (len(self.front.connections) if self.front is not None else 0)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.front is not None:
            await self.front.shutdown(SHUTDOWN_TIMEOUT)
        await self.runner.cleanup()


def low_level_server(handler: Handler | ViewHandler) -> web.Server:
    """aiohttp's low-level server for one listener: bodies passed through as sent (no decompression), and no
    aiohttp access log (a formatted line per request at INFO; the proxy's own access log is telemetry's).

    A ViewHandler fits: aiohttp's requests are RequestViews, and for them the handlers answer with aiohttp
    responses (only requests of the pass-through front get a `Relayed`)."""
    return web.Server(cast(Handler, handler), auto_decompress=False, access_log=None)


async def start_listener(
    name: str,
    handler: Handler | ViewHandler,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    pass_through: bool = False,
    immediate: ImmediateHandler | None = None,
) -> Listener:
    """Bind and serve; bodies are passed through as sent (no request decompression). `pass_through`: the
    common requests are served by the pass-through front, the rest by aiohttp's server; `immediate`: the
    front's handler that answers from the connection's callbacks (see h1server.py)."""
    server = low_level_server(handler)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    sock = tcp_server_socket(host, port)
    if pass_through:
        front = PassThroughFront(cast(ViewHandler, handler), server, immediate)
        loop = asyncio.get_running_loop()
        served = await loop.create_server(front.protocol, sock=sock, ssl=ssl_context)
        return Listener(name, runner, host, sock.getsockname()[1], front, served)
    site = web.SockSite(runner, sock, ssl_context=ssl_context)
    await site.start()
    return Listener(name, runner, host, sock.getsockname()[1])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def tcp_server_socket(host: str, port: int) -> socket.socket:
    """A bound, listening socket whose protocol is IPPROTO_TCP, so the connections it accepts carry it too and
    asyncio and aiohttp set TCP_NODELAY on them (they check the protocol; `socket.create_server` leaves it 0,
    and a small write that follows an unacknowledged one then waits out the peer's 40 ms delayed ACK)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"{err.strerror} (while attempting to bind on address {(host, port)!r})") from None
    return sock
