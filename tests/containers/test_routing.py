"""Canary routing in the compose mesh: the demo's 90/10 split and the header route, seen from order-service's VM."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.containers.mesh import ComposeMesh, eventually, outcomes

CANARY_REQUESTS = 500
CANARY_V2_SHARE = 0.10


def test_canary_split_is_90_10_within_three_sigma(mesh: ComposeMesh) -> None:
    records = mesh.traffic("order-service-v1", "/call/product-service/", count=CANARY_REQUESTS, concurrency=8)
    tally = outcomes(records)
    assert tally["200 v1"] + tally["200 v2"] == CANARY_REQUESTS, f"some requests failed: {dict(tally)}"
    expected = CANARY_REQUESTS * CANARY_V2_SHARE
    sigma = math.sqrt(CANARY_REQUESTS * CANARY_V2_SHARE * (1 - CANARY_V2_SHARE))
    assert abs(tally["200 v2"] - expected) <= 3 * sigma, (
        f"v2 got {tally['200 v2']} of {CANARY_REQUESTS}, expected {expected:.0f} +- {3 * sigma:.0f}: {dict(tally)}"
    )


def test_end_user_jason_always_gets_v2(mesh: ComposeMesh) -> None:
    records = mesh.traffic(
        "order-service-v1", "/call/product-service/", count=60, concurrency=6, headers=["end-user: jason"]
    )
    assert outcomes(records) == {"200 v2": 60}


def test_the_ingress_gateway_takes_outside_traffic_into_the_mesh(mesh: ComposeMesh) -> None:
    """From the host, through the published port of the gateway container, to product-service's VMs over mTLS."""
    url = f"http://127.0.0.1:{mesh.host_port('ingressgateway', 8080)}/products/items"

    def answer() -> dict[str, Any] | None:
        request = urllib.request.Request(url, headers={"Host": "shop.example.test"})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as error:  # not routed yet: close the answer's connection
            error.close()
            return None
        return body if isinstance(body, dict) else None

    first = eventually(answer, 60, "product-service answering through the ingress gateway")
    bodies = [first, *(answer() for _ in range(20))]
    assert {body["service"] if body else None for body in bodies} == {"product-service"}
    assert {body["path"] if body else None for body in bodies} == {"/items"}
    assert {body["caller"] if body else None for body in bodies} == {
        "spiffe://cluster.local/ns/istio-system/sa/ingressgateway"
    }
    request = urllib.request.Request(url, headers={"Host": "elsewhere.example.test"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert refused.value.code == 404


def test_grpc_calls_reach_the_grpc_service_over_http2(mesh: ComposeMesh) -> None:
    """order-service's VM calls ratings (a gRPC app behind a sidecar declared --protocol grpc) through its sidecar."""
    argv = ["python3", "-m", "services.demoapp.ratings", "--call", "127.0.0.1:15001", "--count", "5"]

    def answers() -> list[dict[str, Any]] | None:
        done = mesh.exec("order-service-v1", argv, check=False)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        return lines if done.returncode == 0 and len(lines) == 5 else None

    calls = eventually(answers, 60, "ratings answering gRPC calls from order-service's VM")
    assert {call["service"] for call in calls} == {"ratings"}
    assert {call["caller"] for call in calls} == {"spiffe://cluster.local/ns/shop/sa/order-service"}
