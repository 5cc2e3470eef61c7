"""VirtualService delegation through the whole local mesh: galley accepts a delegate (no hosts), pilot merges
its routes into the root's, and the caller's sidecar follows the merged match."""

from __future__ import annotations

import aiohttp
import pytest

from services.local.mesh import LocalMesh, Workload
from tests.integration.e2e.test_request_path import eventually

pytestmark = pytest.mark.integration

# Only requests carrying `end-user: delegation-probe` reach the delegate, so other tests' traffic to
# payment-service keeps its default route.
ROOT_AND_DELEGATE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment-service, namespace: shop}
spec:
  hosts: [payment-service]
  http:
  - name: probes
    match:
    - headers: {end-user: {exact: delegation-probe}}
    delegate: {name: payment-probes}
  - route:
    - destination: {host: payment-service}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment-probes, namespace: shop}
spec:
  http:
  - name: answered
    match:
    - uri: {prefix: /probe}
    directResponse:
      status: 299
      body: {string: "answered by the delegate"}
"""


async def call(order: Workload, path: str, user: str | None) -> tuple[int, str]:
    headers = {"end-user": user} if user else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"{order.app_url}/call/payment-service/{path}", headers=headers) as reply:
            return reply.status, await reply.text()


async def test_a_delegate_answers_within_its_roots_match(mesh: LocalMesh, order: Workload) -> None:
    mesh.apply_text("payment-delegation.yaml", ROOT_AND_DELEGATE)

    async def delegated() -> bool:
        status, _ = await call(order, "probe/1", "delegation-probe")
        return status == 299

    await eventually(delegated, within=30, what="the delegate's direct response through order-service's sidecar")
    status, body = await call(order, "probe/2", "delegation-probe")
    assert (status, "answered by the delegate" in body) == (299, True), body
    # Outside the delegate's own match (uri) or the root's (header), the root's next route answers.
    for path, user in (("pay", "delegation-probe"), ("probe/3", None)):
        status, body = await call(order, path, user)
        assert status == 200 and '"service": "payment-service"' in body, (path, user, body)
