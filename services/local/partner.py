"""The demo's call outside the mesh: starts the partner API (HTTPS, no sidecar, not in Consul), generates the
ServiceEntry + DestinationRule (TLS origination) + VirtualService that make it reachable from the mesh, and
calls it from order-service through its sidecar."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from services.local.demo import NAMESPACE, wait_for_clusters
from services.local.mesh import LocalMesh, Workload, python_module
from services.local.partner_pki import write_partner_pki
from services.local.processes import Child, free_port, port_open, wait_until
from shared.model.proxy_config import cluster_name

# Not api.partner.test: the e2e suite serves that host itself, in a mesh that also runs the demo config.
PARTNER_HOST = "payments-gateway.partner.test"
PARTNER_NAME = "partner-api"
PARTNER_PATH = "quote"
PARTNER_CLUSTER = cluster_name(PARTNER_HOST, 80)


@dataclass(frozen=True)
class Partner:
    port: int
    ca: Path
    child: Child


def start_partner(mesh: LocalMesh, timeout: float = 30) -> Partner:
    """Writes the partner's CA and certificate under the state dir and starts its HTTPS server on 127.0.0.1."""
    pki = write_partner_pki(mesh.state_dir / "partner", PARTNER_HOST)
    port = free_port()
    child = mesh.supervisor.start(
        PARTNER_NAME,
        python_module(
            "services.demoapp.partner", "--port", str(port), "--tls-cert", str(pki.server_cert),
            "--tls-key", str(pki.server_key),
        ),
    )  # fmt: skip
    mesh.children[PARTNER_NAME] = child
    try:
        wait_until(lambda: port_open("127.0.0.1", port) or not child.alive, timeout, PARTNER_NAME)
    except TimeoutError as err:
        raise RuntimeError(f"{PARTNER_NAME} did not become ready:\n{child.log_tail()}") from err
    if not child.alive:
        raise RuntimeError(f"{PARTNER_NAME} exited:\n{child.log_tail()}")
    return Partner(port=port, ca=pki.ca, child=child)


def partner_config(port: int, ca: Path) -> str:
    """The partner as a mesh destination: a STATIC ServiceEntry on 127.0.0.1:`port` behind the name's port 80,
    TLS originated by the caller's sidecar (verified against `ca`, SNI = the host), a timeout and retries."""
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {PARTNER_NAME}, namespace: {NAMESPACE}}}
spec:
  hosts: [{PARTNER_HOST}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http, protocol: HTTP, targetPort: {port}}}
  endpoints:
  - address: 127.0.0.1
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {PARTNER_NAME}, namespace: {NAMESPACE}}}
spec:
  host: {PARTNER_HOST}
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {json.dumps(str(ca))}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {PARTNER_NAME}, namespace: {NAMESPACE}}}
spec:
  hosts: [{PARTNER_HOST}]
  http:
  - route:
    - destination: {{host: {PARTNER_HOST}}}
    timeout: 5s
    retries: {{attempts: 2, perTryTimeout: 2s, retryOn: "5xx,connect-failure"}}
"""


@dataclass(frozen=True)
class ExternalCall:
    status: int
    answer: object
    """What the partner answered (order-service's `upstream`), or order-service's whole reply if it has none."""

    def report_line(self) -> str:
        return (
            f"order-service -> {PARTNER_HOST} (outside the mesh, ServiceEntry; TLS originated by the sidecar): "
            f"{self.status} {json.dumps(self.answer)}"
        )


async def call_partner(order: Workload) -> ExternalCall:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        async with session.get(f"{order.app_url}/call/{PARTNER_HOST}/{PARTNER_PATH}") as reply:
            body = await reply.json(content_type=None)
    answer = body.get("upstream", body) if isinstance(body, dict) else body
    return ExternalCall(status=reply.status, answer=answer)


def run_partner_call(order: Workload) -> ExternalCall:
    """Waits until order-service's sidecar has the partner's cluster with a healthy endpoint, then calls it."""

    async def ready_then_call() -> ExternalCall:
        await wait_for_clusters(order, (PARTNER_CLUSTER,))
        return await call_partner(order)

    return asyncio.run(ready_then_call())
