"""`isthmus demo --no-wait` end to end: the report shows the canary, the caller identity, the call outside the
mesh (ServiceEntry, TLS originated by the sidecar) answered 200 and the weighted split over two VMs outside the
catalog (WorkloadEntries), the gRPC calls over HTTP/2, and every process it started is gone after."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.local.legacy import LEGACY_HOST
from services.local.partner import PARTNER_HOST
from services.local.processes import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (each child of the demo names its state dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.timeout(240)
def test_the_demo_reports_the_call_outside_the_mesh_and_leaves_nothing_behind(tmp_path: Path) -> None:
    flags = ["--nats-port", "--consul-port", "--citadel-port", "--galley-port", "--pilot-port", "--dashboard-port"]
    argv = [str(Path(sys.executable).parent / "isthmus"), "demo", "--no-wait", "--requests", "40"]
    argv += ["--state-dir", str(tmp_path)]
    for flag in flags:
        argv += [flag, str(free_port())]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=200)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "payment saw caller spiffe://cluster.local/ns/shop/sa/order-service" in output, output
    external = [line for line in output.splitlines() if line.startswith(f"order-service -> {PARTNER_HOST} ")]
    assert len(external) == 1, output
    assert "(outside the mesh, ServiceEntry; TLS originated by the sidecar): 200 " in external[0], output
    assert f'"sni": "{PARTNER_HOST}"' in external[0], "the sidecar asked the partner for its name over TLS"
    assert f"/call/{PARTNER_HOST}/quote" in output, "the Try it yourself block shows the external call"
    assert "applied ServiceEntry shop/partner-api" in output, output
    inventory = [line for line in output.splitlines() if line.startswith(f"order-service -> {LEGACY_HOST} ")]
    assert inventory == [
        f"order-service -> {LEGACY_HOST} (VMs outside the catalog, WorkloadEntries weighted 3:1), 40 requests: "
        '{"vm-a": 30, "vm-b": 10}'
    ], output
    assert "applied WorkloadEntry shop/inventory-vm-b" in output, output
    grpc = [line for line in output.splitlines() if line.startswith("gRPC client -> order-service's sidecar -> ")]
    assert len(grpc) == 1 and "20 calls" in grpc[0] and "failures 0" in grpc[0], output
    assert "spiffe://cluster.local/ns/shop/sa/order-service" in grpc[0], output
    key = tmp_path / "partner" / "server-key.pem"
    assert key.stat().st_mode & 0o077 == 0, "the partner's key is readable by its owner only"
    deadline = time.monotonic() + 10
    while left := _processes_mentioning(str(tmp_path)):
        assert time.monotonic() < deadline, f"processes left behind: {left}"
        time.sleep(0.1)
