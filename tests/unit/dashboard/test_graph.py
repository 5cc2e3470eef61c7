"""Service graph math: rates between scrapes, error share, p99 as Prometheus computes it, mTLS per edge."""

from __future__ import annotations

import pytest

from services.dashboard.graph import edges, quantile, totals

LABELS = (
    'reporter="{reporter}",source_app="web",source_version="v1",destination_service="api",'
    'destination_service_name="api",destination_version="v2",destination_principal="{principal}",'
    'response_code="{code}"'
)


def exposition(ok: float, failed: float, buckets: dict[str, float], principal: str = "spiffe://x") -> str:
    lines = ["# TYPE istio_requests_total counter"]
    for code, value in (("200", ok), ("503", failed)):
        labels = LABELS.format(reporter="source", principal=principal, code=code)
        lines.append(f"istio_requests_total{{{labels}}} {value}")
    destination = LABELS.format(reporter="destination", principal=principal, code="200")
    lines.append(f"istio_requests_total{{{destination}}} 1000")
    lines.append("# TYPE istio_request_duration_milliseconds histogram")
    for le, value in buckets.items():
        labels = LABELS.format(reporter="source", principal=principal, code="200")
        lines.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="{le}"}} {value}')
    return "\n".join(lines) + "\n"


def test_rates_errors_and_p99_between_two_scrapes() -> None:
    before = totals(100.0, [exposition(10, 0, {"5.0": 10, "10.0": 10, "+Inf": 10})])
    after = totals(110.0, [exposition(100, 10, {"5.0": 10, "10.0": 110, "+Inf": 110}), "garbage {"])
    (edge,) = edges(before, after)
    assert edge["source"] == "web:v1" and edge["target"] == "api:v2"
    assert edge["rps"] == pytest.approx(10.0)
    assert edge["errorRate"] == pytest.approx(0.1)
    assert edge["p99Ms"] == pytest.approx(5 + 5 * 99 / 100)  # all 100 new requests fell in (5, 10]
    assert edge["mtls"] is True


def test_first_scrape_has_no_rates_and_restarts_count_from_zero() -> None:
    first = totals(0.0, [exposition(50, 0, {"+Inf": 50}, principal="unknown")])
    (edge,) = edges(None, first)
    assert edge["rps"] == 0.0 and edge["mtls"] is False
    restarted = totals(5.0, [exposition(5, 0, {"+Inf": 5}, principal="unknown")])
    (edge,) = edges(first, restarted)
    assert edge["rps"] == pytest.approx(1.0)


def test_quantile() -> None:
    assert quantile(0.99, {}) is None
    assert quantile(0.5, {1.0: 0, 2.0: 10, float("inf"): 10}) == pytest.approx(1.5)
    assert quantile(0.99, {1.0: 0, float("inf"): 10}) == 1.0
