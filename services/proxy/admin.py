"""Observability of the proxy itself: readiness for Consul's check, and a loopback-only config/cert dump."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.proxy.registration import APP_HEALTH_PATH
from services.proxy.snapshot import ProxyState
from services.proxy.tls import TlsContexts


class Readiness:
    """Ready once the proxy holds a certificate and a config."""

    def __init__(self, state: ProxyState, tls: TlsContexts) -> None:
        self._state = state
        self._tls = tls

    def problems(self) -> list[str]:
        found = []
        if self._tls.identity is None:
            found.append("no workload certificate")
        if self._state.snapshot is None:
            found.append("no configuration")
        return found

    def response(self) -> web.Response:
        problems = self.problems()
        if problems:
            return web.Response(status=503, text="not ready: " + ", ".join(problems) + "\n")
        return web.Response(text="ready\n")


AppProbe = Callable[[int], Awaitable[str | None] | None]
"""Probes the app behind a workload port: None for a port the sidecar does not front, else an awaitable giving
None (the app accepts connections) or why not."""


def health_handler(readiness: Readiness, app_probe: AppProbe | None = None) -> Callable[[web.BaseRequest], Any]:
    """The --health-port listener: GET /healthz/ready (the sidecar) and GET /app-health/<port> (its app, where
    the current config says it is: Consul's app checks)."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET" and request.path == "/healthz/ready":
            return readiness.response()
        if request.method == "GET" and request.path.startswith(APP_HEALTH_PATH) and app_probe is not None:
            port = request.path[len(APP_HEALTH_PATH) :]
            probing = app_probe(int(port)) if port.isdigit() else None
            if probing is not None:
                problem = await probing
                if problem is None:
                    return web.Response(text="app reachable\n")
                return web.Response(status=503, text=f"app unreachable: {problem}\n")
        return web.Response(status=404, text="not found\n")

    return handle


def config_dump(proxy_id: str, state: ProxyState, tls: TlsContexts) -> dict[str, Any]:
    snapshot = state.snapshot
    identity = tls.identity
    certificate = None
    if identity is not None:
        certificate = {
            "spiffeId": identity.spiffe_id,
            "notAfter": datetime.fromtimestamp(identity.not_after, UTC).isoformat(),
        }
    return {
        "proxyId": proxy_id,
        "version": snapshot.version if snapshot else None,
        "config": json.loads(snapshot.config.to_json()) if snapshot else None,
        "certificate": certificate,
    }


def admin_handler(
    proxy_id: str, state: ProxyState, tls: TlsContexts, readiness: Readiness
) -> Callable[[web.BaseRequest], Any]:
    """The loopback --admin-port listener: GET /config_dump and GET /ready."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.method != "GET":
            return web.Response(status=405, text="method not allowed\n")
        if request.path == "/config_dump":
            return web.json_response(config_dump(proxy_id, state, tls))
        if request.path == "/ready":
            return readiness.response()
        return web.Response(status=404, text="not found\n")

    return handle
