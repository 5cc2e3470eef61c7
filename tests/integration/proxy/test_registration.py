"""The workload in the real Consul agent: registered with mesh Meta and checks while running, gone after stop."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from shared.consul import MESH_TAG, META_MESH, META_NAMESPACE, META_PROXY_ID, META_SERVICE_ACCOUNT, META_VERSION

pytestmark = pytest.mark.integration


async def agent_service(consul_addr: str, service_id: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{consul_addr}/v1/agent/service/{service_id}") as reply:
            return reply.status, (await reply.json() if reply.status == 200 else {})


async def agent_checks(consul_addr: str, service_id: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{consul_addr}/v1/agent/checks") as reply:
            checks: dict[str, dict[str, Any]] = await reply.json()
    return [check for check in checks.values() if check["ServiceID"] == service_id]


async def test_registered_while_running_and_removed_on_stop(make_app: Any, make_sidecar: Any, consul_addr: str) -> None:
    app = await make_app("reviews")
    sidecar = await make_sidecar("reviews", app.port, consul_addr=consul_addr)

    status, service = await agent_service(consul_addr, sidecar.proxy_id)
    assert status == 200
    assert service["Service"] == "reviews"
    assert service["Port"] == sidecar.listeners["inbound"].port
    assert service["Address"] == "127.0.0.1"
    assert MESH_TAG in service["Tags"]
    meta = service["Meta"]
    assert meta[META_MESH] == "true"
    assert meta[META_PROXY_ID] == sidecar.proxy_id
    assert meta[META_NAMESPACE] == "default"
    assert meta[META_SERVICE_ACCOUNT] == "reviews"
    assert meta[META_VERSION] == "v1"
    checks = await agent_checks(consul_addr, sidecar.proxy_id)
    assert {check["Type"] for check in checks} == {"http", "tcp"}

    await sidecar.stop()
    status, _ = await agent_service(consul_addr, sidecar.proxy_id)
    assert status == 404
