"""How every proxy listener is served: a low-level aiohttp server on one address, port 0 meaning any free port."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass
class Listener:
    name: str
    runner: web.ServerRunner
    host: str
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


def low_level_server(handler: Handler) -> web.Server:
    """aiohttp's low-level server for one listener: bodies passed through as sent (no decompression), and no
    aiohttp access log (a formatted line per request at INFO; the proxy's own access log is telemetry's)."""
    return web.Server(handler, auto_decompress=False, access_log=None)


async def start_listener(
    name: str, handler: Handler, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> Listener:
    """Bind and serve; bodies are passed through as sent (no request decompression)."""
    server = low_level_server(handler)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    sock = socket.create_server((host, port), family=_family(host), reuse_port=False)
    site = web.SockSite(runner, sock, ssl_context=ssl_context)
    await site.start()
    return Listener(name, runner, host, sock.getsockname()[1])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
