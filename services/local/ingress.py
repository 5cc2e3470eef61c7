"""The demo's ingress gateway: a gateway proxy (`isthmus proxy run --gateway`, no app) configured by a Gateway
and a VirtualService bound to it, serving `shop.example.test` on a plain HTTP port from outside the mesh and
calling product-service over mTLS with the gateway's own identity."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp

from services.local.mesh import LocalMesh, http_ok, python_module
from services.local.processes import Child, free_port

GATEWAY_SERVICE = "ingressgateway"
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_HOST = "shop.example.test"


@dataclass(frozen=True)
class IngressGateway:
    http_port: int
    health_port: int
    child: Child

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def start_gateway(mesh: LocalMesh, timeout: float = 30) -> IngressGateway:
    """Starts the gateway proxy; it is ready (certificate and config) before any Gateway exists."""
    cp = mesh.control_plane
    assert cp is not None, "start_control_plane() first"
    ports = {name: free_port() for name in ("inbound", "admin", "health", "http")}
    state = mesh.state_dir / "proxies" / GATEWAY_SERVICE
    state.mkdir(parents=True, exist_ok=True)
    token_file = state / "token"
    token_file.write_text(mesh.bootstrap_token(GATEWAY_NAMESPACE, GATEWAY_SERVICE))
    token_file.chmod(0o600)
    child = mesh.supervisor.start(
        GATEWAY_SERVICE,
        python_module(
            "services.proxy", "--gateway", "--service", GATEWAY_SERVICE, "--namespace", GATEWAY_NAMESPACE,
            "--inbound-port", str(ports["inbound"]), "--admin-port", str(ports["admin"]),
            "--health-port", str(ports["health"]), "--outbound-port", str(free_port()),
            "--nats-url", cp.nats_url, "--consul-addr", cp.consul_addr, "--citadel-addr", cp.citadel_addr,
            "--trust-domain", cp.trust_domain, "--token-file", str(token_file), "--state-dir", str(state),
            "--prometheus-port", "0",
        ),
    )  # fmt: skip
    mesh.children[GATEWAY_SERVICE] = child
    gateway = IngressGateway(ports["http"], ports["health"], child)
    deadline = time.monotonic() + timeout
    while not http_ok(f"http://127.0.0.1:{gateway.health_port}/healthz/ready"):
        if not child.alive or time.monotonic() > deadline:
            raise RuntimeError(f"the ingress gateway did not become ready:\n{child.log_tail()}")
        time.sleep(0.1)
    return gateway


def gateway_config(gateway: IngressGateway, namespace: str) -> str:
    """A Gateway selecting the gateway proxy (its default label) and a VirtualService bound to it."""
    return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: shop-ingress, namespace: {namespace}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gateway.http_port}, name: http, protocol: HTTP}}
    hosts: ["{namespace}/{GATEWAY_HOST}"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop-ingress, namespace: {namespace}}}
spec:
  hosts: [{GATEWAY_HOST}]
  gateways: [shop-ingress]
  http:
  - match: [{{uri: {{prefix: /products/}}}}]
    rewrite: {{uri: /}}
    route: [{{destination: {{host: product-service}}}}]
"""


@dataclass(frozen=True)
class IngressReport:
    answers: Counter[str]
    callers: frozenset[str]

    @property
    def ok(self) -> bool:
        return bool(self.answers) and all(not key.startswith("HTTP") for key in self.answers)

    def report_line(self) -> str:
        total = sum(self.answers.values())
        return (
            f"outside -> ingress gateway ({GATEWAY_HOST}) -> product-service, {total} requests: "
            f"{json.dumps(dict(self.answers))}; product-service saw caller {', '.join(sorted(self.callers))}"
        )


async def _answer(session: aiohttp.ClientSession, gateway: IngressGateway) -> tuple[str, str | None]:
    async with session.get(f"{gateway.url}/products/item", headers={"Host": GATEWAY_HOST}) as reply:
        body = await reply.json(content_type=None) if reply.status == 200 else None
        if not isinstance(body, dict):
            return f"HTTP {reply.status}", None
        return str(body.get("version")), body.get("caller")


async def call_gateway(gateway: IngressGateway, requests: int, within: float) -> IngressReport:
    """Waits (up to `within` seconds) for the first 200 through the gateway, then sends `requests`."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        deadline = time.monotonic() + within
        while True:
            try:
                answer, _ = await _answer(session, gateway)
            except aiohttp.ClientConnectionError:
                answer = "not listening"
            if not answer.startswith(("HTTP", "not")) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        answers: Counter[str] = Counter()
        callers: set[str] = set()
        for _ in range(requests):
            version, caller = await _answer(session, gateway)
            answers[version] += 1
            if caller:
                callers.add(caller)
        return IngressReport(answers, frozenset(callers))


def run_gateway_calls(gateway: IngressGateway, requests: int = 20, within: float = 30) -> IngressReport:
    return asyncio.run(call_gateway(gateway, requests, within))
