"""Test-wide fixtures: one real nats-server (JetStream) and one real Consul dev agent per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.local.infra import ConsulHandle, NatsHandle, start_consul, start_nats
from services.local.processes import Supervisor


@pytest.fixture(scope="session")
def infra_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infra")


@pytest.fixture(scope="session")
def infra_supervisor(infra_dir: Path) -> Iterator[Supervisor]:
    supervisor = Supervisor(infra_dir / "logs")
    yield supervisor
    supervisor.stop_all()


@pytest.fixture(scope="session")
def nats_server(infra_supervisor: Supervisor, infra_dir: Path) -> NatsHandle:
    return start_nats(infra_supervisor, infra_dir)


@pytest.fixture(scope="session")
def consul_agent(infra_supervisor: Supervisor, infra_dir: Path) -> ConsulHandle:
    return start_consul(infra_supervisor, infra_dir)


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsHandle) -> str:
    return nats_server.url


@pytest.fixture(scope="session")
def consul_addr(consul_agent: ConsulHandle) -> str:
    return consul_agent.addr


def pytest_report_header() -> str:
    return f"isthmus: CI={os.environ.get('CI', '')}"
