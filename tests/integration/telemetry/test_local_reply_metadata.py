"""Inbound local replies carry the destination's peer metadata to meshed callers, and to no one else."""

from __future__ import annotations

import aiohttp
import pytest

from services.proxy.sidecar import Sidecar
from shared.model.proxy_config import ProxyConfig
from shared.peer_metadata import PEER_METADATA, PEER_METADATA_HEADERS, PEER_METADATA_ID, PeerMetadata, decode
from tests.integration.telemetry.conftest import MeshFactory, apply_config, empty_config, route_to
from tests.integration.telemetry.test_sidecar_telemetry import call, scrape, series

pytestmark = pytest.mark.integration


def deny_all(sidecar: Sidecar) -> ProxyConfig:
    """`spec: {}` denies every request: each one is answered by the sidecar itself with 403."""
    return ProxyConfig.model_validate(
        {
            "proxyId": sidecar.proxy_id,
            "service": sidecar.settings.service,
            "namespace": "default",
            "inbound": {"authorization": [{"name": "deny-all", "namespace": "default", "spec": {}}]},
        }
    )


async def test_a_denial_names_the_destination_to_the_calling_sidecar(make_sidecar: MeshFactory) -> None:
    caller = await make_sidecar("productpage", "v3")
    callee = await make_sidecar("reviews", "v2")
    apply_config(caller, route_to(caller, callee, labels=False))  # destination labels only from metadata
    apply_config(callee, deny_all(callee))

    reply = await call(caller, "/reviews/1")
    assert reply.status == 403
    assert not PEER_METADATA_HEADERS & {name.lower() for name in reply.headers}  # the app never sees it

    source = await scrape(caller)
    denied = {"reporter": "source", "response_code": "403"}
    assert series(source, "istio_requests_total", **denied, destination_workload="reviews-v2") == 1
    assert series(source, "istio_requests_total", **denied, destination_app="reviews", destination_version="v2") == 1


async def test_a_denial_tells_callers_outside_the_mesh_nothing(make_sidecar: MeshFactory) -> None:
    callee = await make_sidecar("reviews", "v2")
    apply_config(callee, deny_all(callee))
    url = f"http://127.0.0.1:{callee.listeners['inbound'].port}/direct"
    caller_metadata = PeerMetadata("default", "batch-v1", "batch", "batch", "v1").encode()

    async with aiohttp.ClientSession() as session:
        async with session.get(url) as outsider:
            assert outsider.status == 403
            assert not PEER_METADATA_HEADERS & {name.lower() for name in outsider.headers}
        async with session.get(url, headers={PEER_METADATA: caller_metadata}) as meshed:
            assert meshed.status == 403
            assert decode(meshed.headers[PEER_METADATA]).workload == "reviews-v2"
            assert meshed.headers[PEER_METADATA_ID] == callee.proxy_id


async def test_relayed_answers_to_callers_outside_the_mesh_carry_no_metadata(make_sidecar: MeshFactory) -> None:
    callee = await make_sidecar("reviews", "v2")
    apply_config(callee, empty_config(callee))
    url = f"http://127.0.0.1:{callee.listeners['inbound'].port}/direct"

    async with aiohttp.ClientSession() as session, session.get(url) as outsider:
        assert outsider.status == 200
        assert not PEER_METADATA_HEADERS & {name.lower() for name in outsider.headers}
