"""Peer metadata stays inside the mesh: real sidecars send it to meshed endpoints only, mirrors included."""

from __future__ import annotations

import pytest

from services.proxy.sidecar import Sidecar
from shared.model.proxy_config import ProxyConfig
from shared.peer_metadata import PEER_METADATA_HEADERS
from tests.integration.telemetry.conftest import EchoApp, MeshFactory, apply_config, empty_config, eventually
from tests.integration.telemetry.test_sidecar_telemetry import call, scrape, series

pytestmark = pytest.mark.integration


def _cluster(name: str, port: int, identity: str | None = None) -> dict[str, object]:
    endpoint: dict[str, object] = {"address": "127.0.0.1", "port": port, "labels": {"app": name, "version": "v1"}}
    if identity is not None:
        endpoint["identity"] = identity
    return {"name": f"outbound|80||{name}", "host": name, "port": 80, "endpoints": [endpoint]}


def _host(name: str, mirror: str) -> dict[str, object]:
    route = {"name": name, "route": [{"cluster": f"outbound|80||{name}"}], "mirrors": [{"cluster": mirror}]}
    return {"name": name, "domains": [name], "routes": [route]}


def mixed_config(caller: Sidecar, callee: Sidecar, legacy: EchoApp, shadow: EchoApp) -> ProxyConfig:
    """`reviews` is meshed (callee's inbound, with its identity); `legacy` and the mirror `shadow` are plain
    apps without a sidecar. Both routes mirror to `shadow`."""
    mirror = "outbound|80||shadow"
    return ProxyConfig.model_validate(
        {
            "proxyId": caller.proxy_id,
            "service": caller.settings.service,
            "namespace": "default",
            "virtualHosts": [_host("reviews", mirror), _host("legacy", mirror)],
            "clusters": [
                _cluster("reviews", callee.listeners["inbound"].port, callee.settings.spiffe_id),
                _cluster("legacy", legacy.port),
                _cluster("shadow", shadow.port),
            ],
        }
    )


async def test_plain_upstreams_and_mirrors_never_see_peer_metadata(make_sidecar: MeshFactory) -> None:
    caller = await make_sidecar("productpage", "v3")
    callee = await make_sidecar("reviews", "v2")
    legacy, shadow = EchoApp(), EchoApp()
    await legacy.start()
    await shadow.start()
    try:
        apply_config(caller, mixed_config(caller, callee, legacy, shadow))
        apply_config(callee, empty_config(callee))

        assert (await call(caller, "/legacy", host="legacy")).status == 200
        assert (await call(caller, "/meshed", host="reviews")).status == 200
        await eventually(lambda: len(shadow.seen) == 2, 5.0, "both mirror copies arrive")

        assert sorted(seen.get("host", "") for seen in shadow.seen) == ["legacy-shadow", "reviews-shadow"]
        for seen in [*legacy.seen, *shadow.seen]:
            assert not PEER_METADATA_HEADERS & set(seen), seen
        assert legacy.seen[-1]["x-envoy-attempt-count"] == "1"  # the request did come through the sidecar

        # The meshed destination still got the caller's metadata: its metrics name the caller's workload.
        destination = await scrape(callee)
        assert series(destination, "istio_requests_total", reporter="destination", source_app="productpage") == 1
    finally:
        for app in (legacy, shadow):
            if app.runner is not None:
                await app.runner.cleanup()
