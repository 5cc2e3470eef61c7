"""The peers' workloads in JSON access logs and span attributes, through two real sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.telemetry.conftest import (
    MeshFactory,
    Receiver,
    apply_config,
    empty_config,
    eventually,
    route_to,
)
from tests.integration.telemetry.test_sidecar_telemetry import call

pytestmark = pytest.mark.integration

CALLER = {
    "workload": "productpage-v3",
    "namespace": "default",
    "identity": "spiffe://cluster.local/ns/default/sa/productpage",
    "app": "productpage",
    "version": "v3",
}
CALLEE = {
    "workload": "reviews-v2",
    "namespace": "default",
    "identity": "spiffe://cluster.local/ns/default/sa/reviews",
    "app": "reviews",
    "version": "v2",
}


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_json_logs_and_spans_name_the_peer_workloads(
    make_sidecar: MeshFactory, otlp: tuple[Receiver, str], tmp_path: Path
) -> None:
    receiver, endpoint = otlp
    caller_log, callee_log = tmp_path / "caller.json", tmp_path / "callee.json"
    json_log = {"trace_endpoint": endpoint, "access_log_encoding": "JSON"}
    caller = await make_sidecar("productpage", "v3", access_log_file=str(caller_log), **json_log)
    callee = await make_sidecar("reviews", "v2", access_log_file=str(callee_log), **json_log)
    # No endpoint labels: what the caller knows of the callee comes from the callee's response metadata.
    apply_config(caller, route_to(caller, callee, labels=False))
    apply_config(callee, empty_config(callee))

    assert (await call(caller, "/reviews/1")).status == 200

    await eventually(lambda: bool(_lines(callee_log)) and bool(_lines(caller_log)), 10, "both access logs")
    inbound, outbound = _lines(callee_log)[0], _lines(caller_log)[0]
    assert inbound["downstream_peer"] == CALLER  # learned from the caller's peer metadata over mTLS
    assert inbound["upstream_peer"] is None  # the local app
    assert outbound["upstream_peer"] == CALLEE
    assert outbound["downstream_peer"] is None  # the local app

    await eventually(lambda: len(receiver.spans) >= 2, 20, "two spans at the OTLP receiver")
    by_service = {service: span for service, span in receiver.spans}
    client = {a.key: a.value.string_value for a in by_service["productpage.default"].attributes}
    server = {a.key: a.value.string_value for a in by_service["reviews.default"].attributes}
    assert {key: server[f"istio.downstream.{key}"] for key in CALLER} == CALLER
    assert {key: client[f"istio.upstream.{key}"] for key in CALLEE} == CALLEE
    assert not any(key.startswith("istio.upstream.") for key in server)
    assert server["istio.canonical_revision"] == "v2" and server["istio.mesh_id"] == "cluster.local"
