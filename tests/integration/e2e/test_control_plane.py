"""The control plane an operator trusts, on the real mesh (processes): pilot and NATS restarts under traffic,
a proxy restarted while NATS is down, a VM sidecar from a bundle, a plain-text service without sidecar.

Runs before the request-path and security suites in the same session, so every test restores what it
stops (pilot, NATS, a sidecar) and removes what it adds, and waits until every proxy is SYNCED again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.cli import proxy_config, vm_cmds
from services.cli.proxy_status import SYNCED, collect
from services.local.infra import NatsHandle, restart_nats
from services.local.mesh import LocalMesh, Workload, http_ok, python_module
from services.local.processes import Child, free_port, port_open

pytestmark = pytest.mark.integration

DEADLINE = 60.0

PAYMENT_ROUND_ROBIN = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: control-plane-check, namespace: shop}
spec:
  host: order-service
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
"""


async def eventually(check: Callable[[], Awaitable[object]], what: str, within: float = DEADLINE) -> None:
    deadline = time.monotonic() + within
    last: object = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not within {within}s (last: {last!r})")


async def synced_versions(mesh: LocalMesh) -> dict[str, str] | None:
    """proxy id -> running version when every workload proxy is SYNCED, else None."""
    assert mesh.control_plane is not None
    try:
        rows = await collect(mesh.control_plane.nats_url)
    except Exception:  # NATS still coming back
        return None
    ours = {w.proxy_id for w in mesh.workloads}
    states = {row.proxy_id: row for row in rows if row.proxy_id in ours}
    if set(states) != ours or any(row.state != SYNCED for row in states.values()):
        return None
    return {key: row.acked_version for key, row in states.items()}


def _pilot_sees_all_config(mesh: LocalMesh) -> bool:
    """Pilot's snapshot holds as many resources as galley stores (its watch has caught up with the last apply)."""
    assert mesh.control_plane is not None
    stored = len(_get_json(f"{mesh.control_plane.galley_url}/v1/resources")["items"])
    with urllib.request.urlopen(f"{mesh.control_plane.pilot_url}/metrics", timeout=5) as reply:
        metrics = reply.read().decode()
    line = next((m for m in metrics.splitlines() if m.startswith("pilot_config_resources ")), "")
    return bool(line) and float(line.split()[1]) == stored


async def converged(mesh: LocalMesh) -> dict[str, str] | None:
    """The running versions once pilot has read all stored config and every proxy is SYNCED on what it generates."""
    assert mesh.control_plane is not None
    running = await synced_versions(mesh)
    try:
        if not await asyncio.to_thread(_pilot_sees_all_config, mesh):
            return None
        proxies = (await asyncio.to_thread(_get_json, f"{mesh.control_plane.pilot_url}/debug/proxies"))["proxies"]
    except OSError:
        return None
    generated = {proxy["proxyId"]: proxy["version"] for proxy in proxies}
    if running is None or any(generated.get(key) != version for key, version in running.items()):
        return None
    return running


def workload(mesh: LocalMesh, service: str) -> Workload:
    return next(w for w in mesh.workloads if w.service == service)


class Traffic:
    """Steady requests order -> payment while something is restarted; counts every outcome."""

    def __init__(self, order: Workload) -> None:
        self._url = f"{order.app_url}/call/payment-service/pay"
        self.outcomes: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            while not self._stop.is_set():
                try:
                    async with session.get(self._url) as reply:
                        await reply.read()
                        self.outcomes[str(reply.status)] += 1
                except (aiohttp.ClientError, TimeoutError) as err:
                    self.outcomes[type(err).__name__] += 1
                await asyncio.sleep(0.02)

    async def __aenter__(self) -> Traffic:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def at_least(self, count: int) -> bool:
        return sum(self.outcomes.values()) >= count


@pytest.fixture
async def traffic(mesh: LocalMesh) -> AsyncIterator[Traffic]:
    async with Traffic(workload(mesh, "order-service")) as running:
        yield running


def nats_handle(mesh: LocalMesh) -> NatsHandle:
    child = next(c for c in reversed(mesh.supervisor.children) if c.name == "nats")
    return NatsHandle(child=child, port=int(mesh.nats_url.rsplit(":", 1)[1]), store_dir=mesh.state_dir / "nats")


async def test_pilot_killed_and_restarted_under_traffic_fails_no_request(mesh: LocalMesh, traffic: Traffic) -> None:
    assert mesh.control_plane is not None
    await eventually(lambda: converged(mesh), "every proxy SYNCED on pilot's current config before the restart")
    before = await converged(mesh)
    await eventually(lambda: traffic.at_least(10), "traffic flowing")
    mesh.children["pilot"].kill()
    seen = sum(traffic.outcomes.values())
    await eventually(lambda: traffic.at_least(seen + 20), "traffic while pilot is down")
    pilot_url = mesh.control_plane.pilot_url
    mesh.start_pilot(int(pilot_url.rsplit(":", 1)[1]))
    await eventually(lambda: asyncio.to_thread(http_ok, f"{pilot_url}/healthz"), "pilot ready")
    seen = sum(traffic.outcomes.values())
    await eventually(lambda: traffic.at_least(seen + 20), "traffic after pilot is back")
    assert set(traffic.outcomes) == {"200"}, traffic.outcomes
    await eventually(lambda: converged(mesh), "the restarted pilot generates what the proxies run")
    assert await converged(mesh) == before  # same input, same versions: the restart changed nothing


async def test_nats_restart_proxies_reconnect_and_resync(mesh: LocalMesh, traffic: Traffic) -> None:
    # The previous test restarted pilot: its re-push may still be in flight, so wait for every proxy to settle.
    before: dict[str, str] | None = None

    async def settled() -> bool:
        nonlocal before
        before = await converged(mesh)
        return before is not None

    await eventually(settled, "every proxy SYNCED on pilot's current config before NATS stops")
    assert before is not None
    handle = nats_handle(mesh)
    handle.child.stop()
    seen = sum(traffic.outcomes.values())
    await eventually(lambda: traffic.at_least(seen + 20), "traffic while NATS is down")
    restart_nats(mesh.supervisor, handle)

    async def applied() -> bool:
        try:
            await asyncio.to_thread(mesh.apply_text, "control-plane-check.yaml", PAYMENT_ROUND_ROBIN)
        except OSError:
            return False  # galley not reconnected yet
        return True

    await eventually(applied, "galley accepts config again")

    async def resynced() -> bool:
        now = await synced_versions(mesh)
        order = workload(mesh, "order-service").proxy_id
        return now is not None and now[order] != before[order]

    await eventually(resynced, "every proxy SYNCED on the config applied after the NATS restart")
    assert set(traffic.outcomes) == {"200"}, traffic.outcomes
    await asyncio.to_thread(_delete, mesh, "destinationrule", "shop", "control-plane-check")
    await eventually(lambda: _back_to(mesh, before), "the previous versions again after the delete")


def _delete(mesh: LocalMesh, kind: str, namespace: str, name: str) -> None:
    assert mesh.control_plane is not None
    url = f"{mesh.control_plane.galley_url}/v1/resources/{kind}/{namespace}/{name}"
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10) as reply:
        assert reply.status == 200


async def _back_to(mesh: LocalMesh, versions: dict[str, str]) -> bool:
    return await synced_versions(mesh) == versions


async def test_proxy_restarted_while_nats_is_down_serves_its_last_known_config(mesh: LocalMesh) -> None:
    handle = nats_handle(mesh)
    payment = workload(mesh, "payment-service")
    order = workload(mesh, "order-service")
    handle.child.stop()
    try:
        argv = [str(part) for part in payment.sidecar.popen.args]  # type: ignore[union-attr]
        payment.sidecar.kill()  # a crash: no deregistration
        payment.sidecar = mesh.supervisor.start(payment.sidecar.name, argv)
        mesh.children[payment.sidecar.name] = payment.sidecar
        ready = f"http://127.0.0.1:{payment.health_port}/healthz/ready"
        await eventually(lambda: asyncio.to_thread(http_ok, ready), "the restarted sidecar ready without NATS")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            async with session.get(f"{order.app_url}/call/payment-service/pay") as reply:
                inbound = await reply.json()
            async with session.get(f"{payment.app_url}/call/product-service/") as reply:
                outbound = await reply.json()
        assert inbound["upstream"]["caller"] == "spiffe://cluster.local/ns/shop/sa/order-service", inbound
        assert outbound["status"] == 200 and outbound["upstream"]["service"] == "product-service", outbound
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{payment.admin_url}/config_dump") as reply:
                assert (await reply.json())["version"]
    finally:
        restart_nats(mesh.supervisor, handle)
    await eventually(lambda: synced_versions(mesh), "every proxy SYNCED after NATS is back")


def _bundle_args(mesh: LocalMesh, out: Path, service: str, app_port: int) -> argparse.Namespace:
    assert mesh.control_plane is not None
    root = argparse.ArgumentParser(prog="isthmus")
    vm_cmds.register(root.add_subparsers())
    return root.parse_args(
        ["vm", "bundle", "--service", service, "--namespace", "shop", "--service-account", service,
         "--port", str(app_port), "--version", "v1", "--out", str(out),
         "--citadel-state", str(mesh.control_plane.citadel_state), "--nats-url", mesh.control_plane.nats_url,
         "--consul-addr", mesh.control_plane.consul_addr, "--citadel-addr", mesh.control_plane.citadel_addr]
    )  # fmt: skip


def consul_service_ids(mesh: LocalMesh) -> set[str]:
    with urllib.request.urlopen(f"http://{mesh.consul_addr}/v1/agent/services", timeout=5) as reply:
        return set(json.loads(reply.read()))


async def test_vm_sidecar_from_a_bundle_joins_and_leaves_cleanly(
    mesh: LocalMesh, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    order = workload(mesh, "order-service")
    service = "vm-service"
    ports = {name: free_port() for name in ("app", "inbound", "outbound", "admin", "health")}
    assert vm_cmds.bundle_command(_bundle_args(mesh, tmp_path / "bundle", service, ports["app"])) == 0
    children: list[Child] = [
        mesh.supervisor.start(
            "vm-app", python_module("services.demoapp", "--service", service, "--port", str(ports["app"]),
                                    "--sidecar", f"http://127.0.0.1:{ports['outbound']}"),
        ),
        mesh.supervisor.start("vm-sidecar", python_module(
            "services.cli.main", "proxy", "run", "--bundle", str(tmp_path / "bundle"),
            "--inbound-port", str(ports["inbound"]), "--outbound-port", str(ports["outbound"]),
            "--admin-port", str(ports["admin"]), "--health-port", str(ports["health"]),
        )),
    ]  # fmt: skip
    try:
        health = f"http://{mesh.consul_addr}/v1/health/checks/{service}"

        async def passing() -> bool:
            checks: list[dict[str, Any]] = await asyncio.to_thread(_get_json, health)
            return len(checks) == 2 and all(check["Status"] == "passing" for check in checks)

        await eventually(passing, "the VM workload registered with passing checks")

        async def called() -> dict[str, Any] | None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                async with session.get(f"{order.app_url}/call/{service}/") as reply:
                    body: dict[str, Any] = await reply.json()
                    return body if reply.status == 200 else None

        await eventually(called, "order reaches the VM service")
        body = await called()
        assert body is not None and body["upstream"]["caller"] == "spiffe://cluster.local/ns/shop/sa/order-service"

        proxy_id = next(pid for pid in consul_service_ids(mesh) if pid.startswith(f"{service}-shop-"))
        dump_args = argparse.Namespace(proxy=proxy_id, admin_url=None, consul_addr=mesh.consul_addr,
                                       nats_url=mesh.nats_url, output="table", section=None)  # fmt: skip
        assert await asyncio.to_thread(proxy_config._run, dump_args) == 0
        text = capsys.readouterr().out
        assert f"source: admin http://127.0.0.1:{ports['admin']}" in text
        assert "spiffe://cluster.local/ns/shop/sa/vm-service" in text and "outbound|80||payment-service" in text

        children[1].stop()  # SIGTERM: a clean stop deregisters
        assert children[1].popen.returncode == 0, children[1].log_tail()
        assert proxy_id not in consul_service_ids(mesh)
    finally:
        for child in reversed(children):
            child.stop()
            mesh.supervisor.children.remove(child)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


async def test_a_service_registered_by_other_tools_is_reached_in_plain_text(mesh: LocalMesh) -> None:
    order = workload(mesh, "order-service")
    port = free_port()
    app = mesh.supervisor.start(
        "legacy-app", python_module("services.demoapp", "--service", "legacy", "--port", str(port))
    )
    registration = {"ID": "legacy-1", "Name": "legacy", "Address": "127.0.0.1", "Port": port,
                    "Check": {"TCP": f"127.0.0.1:{port}", "Interval": "1s"}}  # fmt: skip
    request = urllib.request.Request(
        f"http://{mesh.consul_addr}/v1/agent/service/register", data=json.dumps(registration).encode(), method="PUT"
    )
    try:
        await eventually(lambda: asyncio.to_thread(port_open, "127.0.0.1", port), "the legacy app listening")
        await asyncio.to_thread(urllib.request.urlopen, request, None, 5)

        async def answered() -> dict[str, Any] | None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                async with session.get(f"{order.app_url}/call/legacy/") as reply:
                    body: dict[str, Any] = await reply.json()
                    return body if reply.status == 200 else None

        await eventually(answered, "order reaches the service without sidecar")
        body = await answered()
        assert body is not None and body["upstream"]["service"] == "legacy"
        assert body["upstream"]["caller"] is None  # plain text: no client certificate, no identity
    finally:
        deregister = urllib.request.Request(
            f"http://{mesh.consul_addr}/v1/agent/service/deregister/legacy-1", method="PUT"
        )
        await asyncio.to_thread(urllib.request.urlopen, deregister, None, 5)
        app.stop()
        mesh.supervisor.children.remove(app)
    await eventually(lambda: synced_versions(mesh), "every proxy SYNCED after the legacy service left")
