"""A service outside the catalog, through the real mesh: a ServiceEntry names it, a DestinationRule makes the
caller's sidecar originate TLS to it, and a VirtualService's retries apply to it, as for any mesh service."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from services.local.mesh import LocalMesh, Workload
from tests.integration.e2e.test_request_path import eventually
from tests.origination_pki import write_pki

pytestmark = pytest.mark.integration

HOST = "api.partner.test"


@dataclass
class Partner:
    """The external HTTPS service: fails the first `failures` requests with 503, then answers."""

    port: int = 0
    failures: int = 0
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    """(path, TLS server name the caller asked for) per request."""


@pytest.fixture
async def partner(tmp_path: Path) -> AsyncIterator[tuple[Partner, Path]]:
    pki = write_pki(tmp_path, (HOST,))
    context = pki.server_context()
    names: dict[int, str | None] = {}

    def remember_sni(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        names[id(sock)] = name

    context.sni_callback = remember_sni
    state = Partner()

    async def handle(request: web.Request) -> web.Response:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        state.seen.append((request.path, names.get(id(ssl_object)) if ssl_object is not None else "plain text"))
        if state.failures > 0:
            state.failures -= 1
            return web.json_response({"error": "busy"}, status=503)
        return web.json_response({"partner": True, "path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    state.port = int(runner.addresses[0][1])
    try:
        yield state, pki.ca
    finally:
        await runner.cleanup()


def partner_config(port: int, ca: Path) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: partner-api, namespace: shop}}
spec:
  hosts: [{HOST}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http, protocol: HTTP, targetPort: {port}}}
  endpoints:
  - address: 127.0.0.1
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: partner-api, namespace: shop}}
spec:
  host: {HOST}
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: "{ca}"}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: partner-api, namespace: shop}}
spec:
  hosts: [{HOST}]
  http:
  - route:
    - destination: {{host: {HOST}}}
    retries: {{attempts: 3, retryOn: 5xx}}
"""


async def call_partner(order: Workload, path: str) -> tuple[int, object]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"{order.app_url}/call/{HOST}/{path}") as reply:
            return reply.status, await reply.json(content_type=None)


async def test_external_service_gets_tls_origination_and_retries(
    mesh: LocalMesh, order: Workload, partner: tuple[Partner, Path]
) -> None:
    state, ca = partner
    mesh.apply_text("partner.yaml", partner_config(state.port, ca))

    async def reached() -> bool:
        status, _ = await call_partner(order, "warm-up")
        return status == 200

    await eventually(reached, within=30, what=f"{HOST} reachable through order-service's sidecar")

    state.seen.clear()
    state.failures = 2
    status, body = await call_partner(order, "quote")
    assert status == 200, body
    assert isinstance(body, dict) and body["upstream"] == {"partner": True, "path": "/quote"}, body
    # Two 503s retried, then the answer; every attempt over TLS with the host name as SNI.
    assert state.seen == [("/quote", HOST)] * 3, state.seen
