"""DestinationRule `warmup` (Envoy's slow start): an endpoint that joins a running cluster ramps up its share."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from services.proxy.balancer import ClusterRuntimes
from shared.clock import FakeClock
from shared.model.proxy_config import Cluster, Endpoint

NAME = "outbound|80||svc"


def _cluster(*ports: int, lb: dict[str, Any]) -> Cluster:
    return Cluster.model_validate(
        {
            "name": NAME,
            "host": "svc",
            "port": 80,
            "endpoints": [Endpoint(address="10.0.0.1", port=port) for port in ports],
            "trafficPolicy": {"loadBalancer": lb},
        }
    )


def _shares(runtimes: ClusterRuntimes, cluster: Cluster, picks: int = 20_000) -> dict[int, float]:
    runtime = runtimes.get(cluster)
    counts = Counter(runtime.pick().port for _ in range(picks))
    return {port: count / picks for port, count in counts.items()}


def _joined_at_zero(lb: dict[str, Any]) -> tuple[FakeClock, ClusterRuntimes, Cluster]:
    """Endpoints 1 and 2 from the start; endpoint 3 joins at clock 0 (the cluster's next config)."""
    clock = FakeClock(start=0.0)
    runtimes = ClusterRuntimes(clock, random.Random(7))
    runtimes.get(_cluster(1, 2, lb=lb))
    grown = _cluster(1, 2, 3, lb=lb)
    runtimes.get(grown)
    return clock, runtimes, grown


@pytest.mark.parametrize("lb", [{"simple": "ROUND_ROBIN", "warmupDurationSecs": "60s"}, {"warmupDurationSecs": "60s"}])
async def test_a_new_endpoint_ramps_linearly_from_the_minimum(lb: dict[str, Any]) -> None:
    clock, runtimes, grown = _joined_at_zero(lb)
    assert _shares(runtimes, grown)[3] == pytest.approx(0.1 / 2.1, abs=0.01)  # 10 % of its weight at first
    await clock.advance(30)
    assert _shares(runtimes, grown)[3] == pytest.approx(0.5 / 2.5, abs=0.01)
    await clock.advance(30)
    assert _shares(runtimes, grown)[3] == pytest.approx(1 / 3, abs=0.01)  # warm: the cluster's own picker


async def test_aggression_and_minimum_percent_shape_the_ramp() -> None:
    clock, runtimes, grown = _joined_at_zero({"warmup": {"duration": "100s", "minimumPercent": 40, "aggression": 2}})
    assert _shares(runtimes, grown)[3] == pytest.approx(0.4 / 2.4, abs=0.01)  # the floor
    await clock.advance(25)  # (25/100) ^ (1/2) = 0.5: above the floor
    assert _shares(runtimes, grown)[3] == pytest.approx(0.5 / 2.5, abs=0.01)


async def test_endpoints_present_when_the_cluster_is_built_start_warm() -> None:
    runtimes = ClusterRuntimes(FakeClock(start=0.0), random.Random(7))
    cluster = _cluster(1, 2, 3, lb={"simple": "ROUND_ROBIN", "warmupDurationSecs": "60s"})
    runtime = runtimes.get(cluster)
    assert [runtime.pick().port for _ in range(6)] == [1, 2, 3, 1, 2, 3]


async def test_random_and_consistent_hash_do_not_warm_up_as_in_istio() -> None:
    _, runtimes, grown = _joined_at_zero({"simple": "RANDOM", "warmupDurationSecs": "60s"})
    assert _shares(runtimes, grown)[3] == pytest.approx(1 / 3, abs=0.015)
