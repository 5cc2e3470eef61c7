"""An ingress gateway through the real mesh: a gateway proxy process registered in Consul, configured by pilot
from a Gateway and a VirtualService applied to galley, serves requests from outside the mesh into it over mTLS,
and closes its port when the Gateway is deleted."""

from __future__ import annotations

import aiohttp
import pytest

from services.local import ingress
from services.local.mesh import LocalMesh
from tests.integration.e2e.test_request_path import eventually
from tests.integration.e2e.test_workload_entries import delete

pytestmark = pytest.mark.integration


async def refused(gateway: ingress.IngressGateway) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.get(f"{gateway.url}/products/", headers={"Host": ingress.GATEWAY_HOST}):
                return False
    except aiohttp.ClientConnectionError:
        return True


async def test_gateway_routes_outside_traffic_into_the_mesh_and_closes_with_its_gateway(mesh: LocalMesh) -> None:
    gateway = ingress.start_gateway(mesh)
    assert await refused(gateway)  # no Gateway selects it yet: no server port
    mesh.apply_text("ingress.yaml", ingress.gateway_config(gateway, "shop"))
    try:
        report = await ingress.call_gateway(gateway, requests=10, within=30)
        assert report.ok, report.report_line()
        assert set(report.answers) <= {"v1", "v2"}
        assert report.callers == {f"spiffe://cluster.local/ns/{ingress.GATEWAY_NAMESPACE}/sa/{ingress.GATEWAY_SERVICE}"}
    finally:
        delete(mesh, "Gateway", "shop-ingress")
    await eventually(lambda: refused(gateway), within=30, what="the gateway's port closed with its Gateway")
    delete(mesh, "VirtualService", "shop-ingress")
