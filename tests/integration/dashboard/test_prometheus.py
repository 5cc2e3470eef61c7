"""The dashboard's PromQL against a real Prometheus scraping two real sidecars (skips where Debian's
`prometheus` is not installed; `scripts/install-test-tools.sh` installs it as root)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.dashboard import promql, server
from services.local.processes import free_port
from services.proxy.sidecar import Sidecar
from tests.integration.telemetry.conftest import MeshFactory, apply_config, empty_config, eventually, route_to

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus")


SCRAPE_CONFIG = """global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: sidecars
    metrics_path: /stats/prometheus
    static_configs: [{targets: [TARGETS]}]
"""


@pytest.fixture
async def prometheus_for(tmp_path: Path) -> AsyncIterator[Any]:
    """Starts a Prometheus scraping the given sidecars' metrics ports every second; yields its URL."""
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (as root on Debian: apt-get install -y prometheus)")
    started: list[asyncio.subprocess.Process] = []

    async def start(*sidecars: Sidecar) -> str:
        targets = ", ".join(f'"127.0.0.1:{s.listeners["prometheus"].port}"' for s in sidecars)
        config = tmp_path / "prometheus.yml"
        config.write_text(SCRAPE_CONFIG.replace("TARGETS", targets))
        port = free_port()
        assert PROMETHEUS is not None
        with (tmp_path / "prometheus.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        url = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            try:
                async with aiohttp.ClientSession() as session, session.get(f"{url}/-/ready") as reply:
                    return reply.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, 30, "prometheus to be ready")
        return url

    yield start
    for process in started:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_edges_from_a_real_prometheus(make_sidecar: MeshFactory, prometheus_for: Any) -> None:
    caller = await make_sidecar("productpage")
    callee = await make_sidecar("reviews", "v2")
    apply_config(caller, route_to(caller, callee))
    apply_config(callee, empty_config(callee))
    url = await prometheus_for(caller, callee)
    outbound = f"http://127.0.0.1:{caller.listeners['outbound'].port}"

    async def traffic() -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                async with session.get(f"{outbound}/reviews", headers={"Host": "reviews"}) as reply:
                    await reply.read()
                await asyncio.sleep(0.05)

    sender = asyncio.create_task(traffic())
    found: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession() as session:

            async def edge_with_rate() -> bool:
                found[:] = [e for e in await promql.edges(session, url) if e["rps"] > 0]
                return bool(found)

            await eventually(edge_with_rate, 60, "Prometheus to report a rate on the edge")
            view = await server.MeshView("127.0.0.1:1", None, url).refresh(session)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)

    (edge,) = found
    assert (edge["source"], edge["target"]) == ("productpage:v1", "reviews:v2")
    assert edge["mtls"] is True and edge["errorRate"] == 0.0
    assert edge["p99Ms"] is not None and edge["p99Ms"] > 0
    assert view["dataSource"] == f"prometheus {url}"
    assert [e["target"] for e in view["edges"]] == ["reviews:v2"]
