"""Canary routing in the compose mesh: the demo's 90/10 split and the header route, seen from order-service's VM."""

from __future__ import annotations

import math

from tests.containers.mesh import ComposeMesh, outcomes

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
