"""Failures in the compose mesh: injected faults, a "VM" that dies under traffic, and the control plane going away
while the data plane keeps serving. These disturb the mesh, so the suite runs them after the other tests."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from tests.containers.mesh import DRIVER, NAMESPACE, ComposeMesh, Record, eventually, outcomes, parse_records

pytestmark = pytest.mark.disruptive

PAYMENT_ABORT = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: payment-service-abort
  namespace: {NAMESPACE}
spec:
  hosts:
  - payment-service
  http:
  - fault:
      abort:
        httpStatus: 503
        percentage:
          value: 100
    route:
    - destination:
        host: payment-service
        subset: v1
"""

KILLED_VM = "product-service-v1-b"
SURVIVOR_VM = "product-service-v1"
# Until the dead VM's Consul agent is declared failed and pilot pushes the change, requests routed to it fail.
FAILOVER_SECONDS = 30
TRAFFIC_SECONDS = 20


class BackgroundTraffic:
    """tests/containers/driver.py running in a VM while the test does something else."""

    def __init__(self, mesh: ComposeMesh, vm: str, path: str, seconds: float, concurrency: int = 4) -> None:
        self.process = subprocess.Popen(
            mesh.driver_command(vm, path, seconds=seconds, concurrency=concurrency),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.seconds = seconds
        assert self.process.stdin is not None
        self.process.stdin.write(DRIVER.read_text())
        self.process.stdin.close()
        self.process.stdin = None  # communicate() must not touch it again

    def __enter__(self) -> BackgroundTraffic:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()

    def records(self) -> list[Record]:
        stdout, stderr = self.process.communicate(timeout=self.seconds + 120)
        assert self.process.returncode == 0, f"traffic driver exited {self.process.returncode}: {stderr}"
        return parse_records(stdout)


def cluster_endpoints(mesh: ComposeMesh, vm: str, subset: str, host: str) -> set[str]:
    """Addresses of the healthy endpoints `vm`'s sidecar holds for the subset's cluster (its /config_dump)."""
    dump = json.loads(mesh.exec(vm, ["isthmus-http", "http://127.0.0.1:15000/config_dump"]).stdout)
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if str(node.get("name", "")).endswith(f"|{subset}|{host}") and isinstance(node.get("endpoints"), list):
                found.update(e["address"] for e in node["endpoints"] if e.get("healthy", True))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dump.get("config"))
    return found


def failures(records: list[Record]) -> list[Record]:
    return [r for r in records if r[1] != 200]


def test_abort_fault_applied_through_galley_then_removed(mesh: ComposeMesh) -> None:
    mesh.apply(PAYMENT_ABORT)
    try:
        eventually(
            lambda: mesh.call("order-service-v1", "/call/payment-service/pay")[1] == 503, 30, "injected 503 seen"
        )
        assert outcomes(mesh.traffic("order-service-v1", "/call/payment-service/pay", count=20)) == {"503": 20}
        # Other services are untouched by payment-service's fault.
        assert mesh.call("order-service-v1", "/call/product-service/")[1] == 200
    finally:
        mesh.delete(PAYMENT_ABORT)
    eventually(
        lambda: mesh.call("order-service-v1", "/call/payment-service/pay")[1] == 200, 30, "fault removed: 200 again"
    )


def test_killed_vm_is_dropped_and_its_traffic_moves_to_healthy_instances(mesh: ComposeMesh) -> None:
    killed_ip, survivor_ip = mesh.ip(KILLED_VM), mesh.ip(SURVIVOR_VM)
    eventually(
        lambda: cluster_endpoints(mesh, "order-service-v1", "v1", "product-service") == {killed_ip, survivor_ip},
        60,
        "order-service's sidecar holds both product-service v1 VMs",
    )
    with BackgroundTraffic(mesh, "order-service-v1", "/call/product-service/", TRAFFIC_SECONDS) as traffic:
        time.sleep(3)
        killed_at = time.time()  # the driver's records carry wall-clock times; containers share the host's clock
        mesh.kill(KILLED_VM)
        eventually(
            lambda: cluster_endpoints(mesh, "order-service-v1", "v1", "product-service") == {survivor_ip},
            FAILOVER_SECONDS,
            f"{KILLED_VM} ({killed_ip}) dropped from order-service's product-service v1 endpoints",
        )
        dropped_at = time.time()
        during = traffic.records()
    print(f"dropped {dropped_at - killed_at:.1f}s after the kill: {outcomes(during)}")

    # Requests sent just before the kill may still be in flight to the VM when it dies.
    before = [r for r in during if r[0] < killed_at - 1]
    assert before and not failures(before), f"failures before the kill: {outcomes(before)}"
    failed = failures(during)
    assert len(failed) <= len(during) // 4, f"{len(failed)} of {len(during)} failed around the kill: {outcomes(during)}"
    # Once dropped, every request is served by the healthy VMs (v1 by the survivor).
    after = outcomes(mesh.traffic("order-service-v1", "/call/product-service/", count=100))
    assert after["200 v1"] + after["200 v2"] == 100 and after["200 v1"] > 0, f"after the drop: {dict(after)}"


def test_pilot_killed_under_traffic_loses_no_request(mesh: ComposeMesh) -> None:
    try:
        with BackgroundTraffic(mesh, "order-service-v1", "/call/product-service/", 15) as traffic:
            time.sleep(3)
            killed_at = time.time()
            mesh.kill("pilot")
            records = traffic.records()
    finally:
        mesh.start_again("pilot")
    after_kill = [r for r in records if r[0] > killed_at]
    assert len(after_kill) >= 20, f"too little traffic while pilot was down: {len(after_kill)} requests"
    assert not failures(records), f"requests failed while pilot was down: {outcomes(records)}"

    # Back up, pilot pushes again: a config change reaches the sidecars.
    eventually(lambda: "pilot" not in " ".join(mesh.not_ready()), 120, "pilot healthy again", interval=2)
    mesh.apply(PAYMENT_ABORT)
    try:
        eventually(
            lambda: mesh.call("order-service-v1", "/call/payment-service/pay")[1] == 503,
            60,
            "a change applied after pilot's restart reaches order-service's sidecar",
        )
    finally:
        mesh.delete(PAYMENT_ABORT)
    eventually(
        lambda: mesh.call("order-service-v1", "/call/payment-service/pay")[1] == 200, 60, "fault removed: 200 again"
    )
