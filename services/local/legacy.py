"""The demo's VMs outside the catalog: two inventory servers with no sidecar and no Consul registration, made a
mesh destination by a ServiceEntry whose workloadSelector chooses their WorkloadEntries (weights 3 and 1), and
called from order-service through its sidecar."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass

import aiohttp

from services.local.demo import NAMESPACE, versions_seen, wait_for_clusters
from services.local.mesh import LocalMesh, Workload, python_module
from services.local.processes import Child, free_port, port_open, wait_until
from shared.model.proxy_config import cluster_name

LEGACY_HOST = "inventory.legacy.test"
LEGACY_SERVICE = "inventory"
LEGACY_CLUSTER = cluster_name(LEGACY_HOST, 80)
VMS = (("inventory-vm-a", "vm-a", 3), ("inventory-vm-b", "vm-b", 1))
"""(process name, version it answers as, WorkloadEntry weight)."""


@dataclass(frozen=True)
class LegacyVm:
    name: str
    version: str
    weight: int
    port: int
    child: Child


def start_legacy(mesh: LocalMesh, timeout: float = 30) -> list[LegacyVm]:
    """Starts each inventory server on 127.0.0.1 (the demo app, answering with its name and version)."""
    vms = []
    for name, version, weight in VMS:
        port = free_port()
        child = mesh.supervisor.start(
            name,
            python_module("services.demoapp", "--service", LEGACY_SERVICE, "--version", version, "--port", str(port)),
        )
        mesh.children[name] = child
        try:
            wait_until(lambda: port_open("127.0.0.1", port) or not child.alive, timeout, name)  # noqa: B023
        except TimeoutError as err:
            raise RuntimeError(f"{name} did not become ready:\n{child.log_tail()}") from err
        if not child.alive:
            raise RuntimeError(f"{name} exited:\n{child.log_tail()}")
        vms.append(LegacyVm(name, version, weight, port, child))
    return vms


def legacy_config(vms: list[LegacyVm]) -> str:
    """A ServiceEntry selecting the VMs' WorkloadEntries by label, each VM with its port and weight."""
    entries = "".join(
        f"""---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {vm.name}, namespace: {NAMESPACE}}}
spec: {{address: 127.0.0.1, ports: {{http: {vm.port}}}, labels: {{app: {LEGACY_SERVICE}, version: {vm.version}}}, \
weight: {vm.weight}}}
"""
        for vm in vms
    )
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {LEGACY_SERVICE}, namespace: {NAMESPACE}}}
spec:
  hosts: [{LEGACY_HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: {LEGACY_SERVICE}}}}}
{entries}"""


@dataclass(frozen=True)
class LegacyReport:
    versions: Counter[str]

    def report_line(self) -> str:
        total = sum(self.versions.values())
        return (
            f"order-service -> {LEGACY_HOST} (VMs outside the catalog, WorkloadEntries weighted 3:1), {total} "
            f"requests: {json.dumps(dict(self.versions))}"
        )


async def call_legacy(order: Workload, requests: int) -> LegacyReport:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        return LegacyReport(await versions_seen(session, f"{order.app_url}/call/{LEGACY_HOST}/stock", requests))


def run_legacy_calls(order: Workload, requests: int = 40) -> LegacyReport:
    """Waits until order-service's sidecar has the inventory cluster with a healthy endpoint, then calls it."""

    async def ready_then_call() -> LegacyReport:
        await wait_for_clusters(order, (LEGACY_CLUSTER,))
        return await call_legacy(order, requests)

    return asyncio.run(ready_then_call())
