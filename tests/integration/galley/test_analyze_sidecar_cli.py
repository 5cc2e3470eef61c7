"""`isthmus analyze` on Sidecar ingress listeners against a real Consul catalog: which app ports workloads front."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.galley.test_analyze_cli import run

pytestmark = pytest.mark.integration

SIDECAR = """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: reviews, namespace: {namespace}}}
spec:
  workloadSelector: {{labels: {{app: reviews}}}}
  ingress:
  - port: {{number: 9080}}
    defaultEndpoint: 127.0.0.1:8080
  - port: {{number: 5432}}
  - port: {{number: 7000}}
"""


@pytest.fixture
async def namespace(consul_addr: str) -> AsyncIterator[str]:
    """A meshed workload fronting app port 9080 and the extra port 5432, alone in a namespace of its own."""
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    service_id = f"reviews-{namespace}"
    meta = {
        "namespace": namespace,
        "isthmus-mesh": "true",
        "app": "reviews",
        "isthmus-app-port": "9080",
        "isthmus-extra-ports": "tcp:5432:41000",
    }
    base = f"http://{consul_addr}/v1/agent/service"
    async with aiohttp.ClientSession() as session:
        body = {"Name": service_id, "ID": service_id, "Port": 15006, "Meta": meta}
        async with session.put(f"{base}/register", json=body) as reply:
            assert reply.status == 200
        yield namespace
        async with session.put(f"{base}/deregister/{service_id}") as reply:
            assert reply.status == 200


async def test_only_the_port_no_workload_fronts_is_flagged(
    namespace: str, consul_addr: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text(SIDECAR.format(namespace=namespace))

    assert await run("analyze", "-f", str(config), "--no-galley", "--consul-addr", consul_addr) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if "ISM0022" in line] == [
        f"Warning [ISM0022] Sidecar {namespace}/reviews: spec.ingress[2].port.number: no workload it applies to "
        "fronts port 7000 (their app ports: 5432, 9080); the listener changes nothing"
    ]
