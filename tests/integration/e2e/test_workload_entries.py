"""VMs outside the catalog as a ServiceEntry's endpoints, through the real mesh: WorkloadEntries chosen by the
entry's workloadSelector serve order-service's calls, and a deleted one stops receiving them."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from services.local.mesh import LocalMesh, Workload
from tests.integration.e2e.test_request_path import eventually

pytestmark = pytest.mark.integration

HOST = "legacy.shop.test"


@pytest.fixture
async def legacy_vms() -> AsyncIterator[list[int]]:
    """Two plain HTTP servers standing for VMs without a sidecar or a Consul registration; each names itself."""
    runners: list[web.AppRunner] = []
    ports: list[int] = []
    for name in ("vm-a", "vm-b"):

        async def handle(request: web.Request, name: str = name) -> web.Response:
            return web.json_response({"vm": name, "path": request.path})

        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        ports.append(int(runner.addresses[0][1]))
    try:
        yield ports
    finally:
        for runner in runners:
            await runner.cleanup()


def legacy_config(ports: list[int]) -> str:
    workloads = "".join(
        f"""---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: shop}}
spec: {{address: 127.0.0.1, labels: {{app: legacy, vm: {name}}}, ports: {{http: {port}}}}}
"""
        for name, port in zip(("vm-a", "vm-b"), ports, strict=True)
    )
    return (
        f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: legacy, namespace: shop}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: legacy}}}}
"""
        + workloads
    )


async def vms_answering(order: Workload, calls: int) -> set[str]:
    found: set[str] = set()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for _ in range(calls):
            async with session.get(f"{order.app_url}/call/{HOST}/report") as reply:
                if reply.status != 200:
                    return set()
                body = await reply.json(content_type=None)
                found.add(body["upstream"]["vm"])
    return found


def delete(mesh: LocalMesh, kind: str, name: str) -> None:
    cp = mesh.control_plane
    assert cp is not None
    request = urllib.request.Request(f"{cp.galley_url}/v1/resources/{kind}/shop/{name}", method="DELETE")
    with urllib.request.urlopen(request, timeout=10):
        pass


async def test_workload_entries_serve_an_entry_and_a_deleted_one_leaves(
    mesh: LocalMesh, order: Workload, legacy_vms: list[int]
) -> None:
    mesh.apply_text("legacy.yaml", legacy_config(legacy_vms))
    try:

        async def both() -> bool:
            return await vms_answering(order, 8) == {"vm-a", "vm-b"}

        await eventually(both, within=30, what="both WorkloadEntries answering order-service's calls")
        delete(mesh, "WorkloadEntry", "vm-a")

        async def only_b() -> bool:
            return await vms_answering(order, 8) == {"vm-b"}

        await eventually(only_b, within=30, what="the deleted WorkloadEntry no longer called")
    finally:
        for kind, name in (("WorkloadEntry", "vm-b"), ("ServiceEntry", "legacy")):
            delete(mesh, kind, name)
