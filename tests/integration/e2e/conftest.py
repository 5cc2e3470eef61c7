"""One whole local mesh per test session: citadel, galley, pilot and the demo workloads, as real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.local import demo
from services.local.infra import start_consul, start_nats
from services.local.mesh import LocalMesh, Workload
from services.local.processes import Supervisor


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    """Its own nats-server and Consul, so other suites' buckets and registrations cannot leak into it."""
    state_dir: Path = tmp_path_factory.mktemp("mesh")
    supervisor = Supervisor(state_dir / "logs")
    nats_handle = start_nats(supervisor, state_dir)
    consul_handle = start_consul(supervisor, state_dir)
    local = LocalMesh(supervisor, state_dir, nats_url=nats_handle.url, consul_addr=consul_handle.addr)
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
