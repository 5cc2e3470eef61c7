"""The workload in the real Consul agent: registered with mesh Meta and checks while running, gone after stop."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from services.local.processes import free_port
from shared.consul import MESH_TAG, META_MESH, META_NAMESPACE, META_PROXY_ID, META_SERVICE_ACCOUNT, META_VERSION
from shared.model.proxy_config import ProxyConfig

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
    assert sorted(check["Name"] for check in checks) == ["app port", "sidecar ready"]
    assert {check["Type"] for check in checks} == {"http"}

    await sidecar.stop()
    status, _ = await agent_service(consul_addr, sidecar.proxy_id)
    assert status == 404


async def check_status(consul_addr: str, service_id: str, name: str) -> str:
    checks = await agent_checks(consul_addr, service_id)
    return next((str(check["Status"]) for check in checks if check["Name"] == name), "missing")


async def eventually_status(consul_addr: str, service_id: str, name: str, wanted: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while (found := await check_status(consul_addr, service_id, name)) != wanted:
        assert loop.time() < deadline, f"check {name!r} stayed {found}, expected {wanted}"
        await asyncio.sleep(0.2)


async def test_the_app_check_follows_the_sidecar_ingress_default_endpoint(
    make_app: Any, make_sidecar: Any, consul_addr: str, bus: Any
) -> None:
    """Consul's app check asks the sidecar, which probes the app where its config says the app listens."""
    app = await make_app("reviews")
    declared = free_port()  # nothing listens on the port the sidecar fronts
    sidecar = await make_sidecar("reviews", declared, consul_addr=consul_addr)

    def config(**inbound: Any) -> ProxyConfig:
        raw = {"proxyId": sidecar.proxy_id, "service": "reviews", "namespace": "default", "inbound": inbound}
        return ProxyConfig.model_validate(raw).versioned()

    await bus.push(config(appPorts=[{"port": declared, "defaultEndpoint": f"127.0.0.1:{app.port}"}]))
    await eventually_status(consul_addr, sidecar.proxy_id, "app port", "passing")
    await bus.push(config())
    await eventually_status(consul_addr, sidecar.proxy_id, "app port", "critical")
