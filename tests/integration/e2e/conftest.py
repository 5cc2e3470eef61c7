"""One whole local mesh per test session: citadel, galley, pilot and the demo workloads, as real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.local import demo
from services.local.mesh import LocalMesh, Workload
from services.local.processes import Supervisor


@pytest.fixture(scope="session")
def mesh(nats_url: str, consul_addr: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    state_dir: Path = tmp_path_factory.mktemp("mesh")
    local = LocalMesh(Supervisor(state_dir / "logs"), state_dir, nats_url=nats_url, consul_addr=consul_addr)
    try:
        local.start_control_plane()
        demo.start_workloads(local)
        for name, content in demo.demo_config():
            local.apply_text(name, content)
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def workloads(mesh: LocalMesh) -> dict[str, Workload]:
    return {f"{w.service}-{w.version}": w for w in mesh.workloads}


@pytest.fixture(scope="session")
def order(workloads: dict[str, Workload]) -> Workload:
    return workloads["order-service-v1"]
