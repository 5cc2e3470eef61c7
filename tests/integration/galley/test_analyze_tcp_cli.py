"""`isthmus analyze` on tcp routes against a real Consul catalog: which services are declared TCP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.galley.test_analyze_cli import run

pytestmark = pytest.mark.integration

ROUTES = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: data}}
spec:
  hosts: [{name}]
  tcp:
  - route:
    - destination: {{host: {name}}}
"""


@pytest.fixture
async def services(consul_addr: str) -> AsyncIterator[tuple[str, str]]:
    """A TCP service (Meta isthmus-protocol=tcp) and an HTTP one, registered with the real agent."""
    suffix = uuid.uuid4().hex[:8]
    tcp, http = f"pg-{suffix}", f"web-{suffix}"
    base = f"http://{consul_addr}/v1/agent/service"
    async with aiohttp.ClientSession() as session:
        for name, meta in ((tcp, {"isthmus-protocol": "tcp"}), (http, {})):
            body = {"Name": name, "ID": name, "Port": 5432, "Meta": {"namespace": "data", **meta}}
            async with session.put(f"{base}/register", json=body) as reply:
                assert reply.status == 200
        yield tcp, http
        for name in (tcp, http):
            async with session.put(f"{base}/deregister/{name}") as reply:
                assert reply.status == 200


async def test_only_the_route_for_the_http_service_is_flagged(
    services: tuple[str, str], consul_addr: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tcp, http = services
    config = tmp_path / "tcp.yaml"
    config.write_text(ROUTES.format(name=tcp) + "---\n" + ROUTES.format(name=http))

    assert await run("analyze", "-f", str(config), "--no-galley", "--consul-addr", consul_addr) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1:4] for line in out] == [
        ["[ISM0008]", "VirtualService", f"data/{http}:"],
        ["[ISM0008]", "VirtualService", f"data/{http}:"],
    ]
