"""Pilot's own HTTP endpoint (default 127.0.0.1:15014): health, a debug view of the proxies, metrics."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.pilot.metrics import PilotMetrics


def parse_listen(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:15014`) -> (host, port); raises ValueError naming the problem."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"--listen {value!r}: expected host:port, like 127.0.0.1:15014")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {value!r}: port {port!r} is not a number in 0-65535")
    return host.strip("[]"), int(port)


def build_app(
    ready: Callable[[], bool], versions: Callable[[], dict[str, str]], metrics: PilotMetrics
) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="syncing: config or catalog watch not synced yet\n")

    async def debug_proxies(_: web.Request) -> web.Response:
        current = versions()
        body = {"proxies": [{"proxyId": key, "version": current[key]} for key in sorted(current)]}
        return web.json_response(body)

    async def prometheus(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/debug/proxies", debug_proxies)
    app.router.add_get("/metrics", prometheus)
    return app


class DebugServer:
    def __init__(self, app: web.Application, listen: str) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host, self._port = parse_listen(listen)
        self.url = ""

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"

    async def stop(self) -> None:
        await self._runner.cleanup()
