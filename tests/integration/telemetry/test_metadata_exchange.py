"""Peer metadata exchange through real sidecars: destination-side source labels, stripping, trust over mTLS."""

from __future__ import annotations

import aiohttp
import pytest

from services.proxy.sidecar import Sidecar
from shared.peer_metadata import PEER_METADATA, PEER_METADATA_HEADERS, PEER_METADATA_ID, PeerMetadata, decode
from tests.integration.telemetry.conftest import MeshFactory, apply_config, empty_config, route_to
from tests.integration.telemetry.test_sidecar_telemetry import call, scrape, series

pytestmark = pytest.mark.integration

CALLER_PRINCIPAL = "spiffe://cluster.local/ns/default/sa/productpage"
CALLEE_PRINCIPAL = "spiffe://cluster.local/ns/default/sa/reviews"
EVIL = PeerMetadata("default", "evil-v9", "productpage", "evil", "v9").encode()


async def pair(make_sidecar: MeshFactory, labels: bool = True) -> tuple[Sidecar, Sidecar]:
    caller = await make_sidecar("productpage", "v3")
    callee = await make_sidecar("reviews", "v2")
    apply_config(caller, route_to(caller, callee, labels=labels))
    apply_config(callee, empty_config(callee))
    return caller, callee


async def test_destination_side_names_the_caller_and_no_app_sees_metadata(make_sidecar: MeshFactory) -> None:
    caller, callee = await pair(make_sidecar)

    # The caller's app tries to pass itself off as another workload; its sidecar replaces the claim.
    reply = await call(caller, "/reviews/1", **{PEER_METADATA: EVIL, PEER_METADATA_ID: "sidecar~evil"})
    assert reply.status == 200
    assert not PEER_METADATA_HEADERS & {name.lower() for name in reply.headers}

    seen = callee.app.seen[-1]  # type: ignore[attr-defined]
    assert not PEER_METADATA_HEADERS & set(seen)
    destination = await scrape(callee)
    assert (
        series(
            destination,
            "istio_requests_total",
            reporter="destination",
            source_workload="productpage-v3",
            source_workload_namespace="default",
            source_principal=CALLER_PRINCIPAL,
            source_app="productpage",
            source_version="v3",
            destination_workload="reviews-v2",
            connection_security_policy="mutual_tls",
        )
        == 1
    )
    assert series(destination, "istio_requests_total", source_app="evil") == 0


async def test_source_side_learns_unlabelled_destinations_from_the_response(make_sidecar: MeshFactory) -> None:
    caller, _ = await pair(make_sidecar, labels=False)

    # The callee's app claims to be someone else in its response; its sidecar replaces the claim.
    reply = await call(caller, "/claim", **{"x-echo-claim": EVIL})
    assert reply.status == 200
    assert not PEER_METADATA_HEADERS & {name.lower() for name in reply.headers}

    source = await scrape(caller)
    assert (
        series(
            source,
            "istio_requests_total",
            reporter="source",
            destination_workload="reviews-v2",
            destination_workload_namespace="default",
            destination_principal=CALLEE_PRINCIPAL,
            destination_app="reviews",
            destination_version="v2",
        )
        == 1
    )
    assert series(source, "istio_requests_total", destination_app="evil") == 0


async def direct(callee: Sidecar, metadata: str, caller: Sidecar | None = None) -> int:
    """A request straight to the callee's inbound port (over mTLS with `caller`'s certificate, else plain
    text); returns the status after checking the response carries the callee's own metadata."""
    scheme = "https" if caller is not None else "http"
    url = f"{scheme}://127.0.0.1:{callee.listeners['inbound'].port}/direct"
    ssl = caller.tls.client() if caller is not None else False
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={PEER_METADATA: metadata}, ssl=ssl) as reply,
    ):
        await reply.read()
        assert decode(reply.headers[PEER_METADATA]).workload == "reviews-v2"
        assert reply.headers[PEER_METADATA_ID] == callee.proxy_id
        return reply.status


async def test_metadata_disagreeing_with_the_certificate_is_ignored(make_sidecar: MeshFactory) -> None:
    caller, callee = await pair(make_sidecar)
    other_namespace = PeerMetadata("payments", "productpage-v3", "productpage", "productpage", "v3").encode()
    other_account = PeerMetadata("default", "productpage-v3", "admin", "productpage", "v3").encode()

    assert await direct(callee, other_namespace, caller) == 200
    assert await direct(callee, other_account, caller) == 200
    assert await direct(callee, "not base64 json", caller) == 200

    destination = await scrape(callee)
    fallback = series(
        destination,
        "istio_requests_total",
        reporter="destination",
        source_workload="unknown",
        source_workload_namespace="default",
        source_principal=CALLER_PRINCIPAL,
        source_app="unknown",
    )
    assert fallback == 3
    assert series(destination, "istio_requests_total", source_workload_namespace="payments") == 0


async def test_plain_text_metadata_is_a_hint_without_a_principal(make_sidecar: MeshFactory) -> None:
    _, callee = await pair(make_sidecar)
    hint = PeerMetadata("legacy", "batch-v1", "batch", "batch", "v1").encode()

    assert await direct(callee, hint) == 200

    destination = await scrape(callee)
    assert (
        series(
            destination,
            "istio_requests_total",
            reporter="destination",
            source_workload="batch-v1",
            source_workload_namespace="legacy",
            source_principal="unknown",
            source_app="batch",
            connection_security_policy="none",
        )
        == 1
    )
