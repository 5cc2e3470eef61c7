"""Locality-aware balancing from config to endpoint choice: priorities, spill-over by health, distribute."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import pytest
from pydantic import ValidationError

from services.proxy.balancer import ClusterRuntime, ClusterRuntimes
from services.proxy.locality import matches, parse_locality
from shared.clock import FakeClock
from shared.model.destination_rule import LoadBalancerSettings
from shared.model.proxy_config import Cluster

OUTLIER = {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "30s", "maxEjectionPercent": 100}
CALLER = "us-east/a/rack1"
LOCALITIES = {
    "10.0.0.1": "us-east/a/rack1",
    "10.0.0.2": "us-east/a/rack1",
    "10.0.0.3": "us-east/a/rack2",
    "10.0.0.4": "us-east/b/rack1",
    "10.0.0.5": "us-west/a/rack1",
    "10.0.0.6": "eu-west/a/rack1",
}


def _cluster(policy: dict[str, Any] | None, localities: dict[str, str] = LOCALITIES) -> Cluster:
    return Cluster.model_validate(
        {
            "name": "outbound|80||reviews",
            "host": "reviews",
            "port": 80,
            "endpoints": [
                {"address": address, "port": 9080, "labels": {"locality": locality}}
                for address, locality in localities.items()
            ],
            "trafficPolicy": policy,
        }
    )


def _runtime(cluster: Cluster, clock: FakeClock, locality: str | None = CALLER) -> ClusterRuntime:
    return ClusterRuntimes(clock, random.Random(11), locality).get(cluster)


def _eject(runtime: ClusterRuntime, *addresses: str) -> None:
    for endpoint in runtime.config.endpoints:
        if endpoint.address in addresses:
            runtime.report(endpoint, 503)


def _picks(runtime: ClusterRuntime, n: int = 2000) -> Counter[str]:
    return Counter(runtime.pick().address for _ in range(n))


def test_with_outlier_detection_traffic_stays_in_the_callers_subzone() -> None:
    runtime = _runtime(_cluster({"outlierDetection": OUTLIER}), FakeClock())
    assert set(_picks(runtime)) == {"10.0.0.1", "10.0.0.2"}


def test_failover_walks_subzone_zone_region_then_the_rest() -> None:
    clock = FakeClock()
    runtime = _runtime(_cluster({"outlierDetection": OUTLIER}), clock)
    _eject(runtime, "10.0.0.1", "10.0.0.2")
    assert set(_picks(runtime)) == {"10.0.0.3"}, "same zone next"
    _eject(runtime, "10.0.0.3")
    assert set(_picks(runtime)) == {"10.0.0.4"}, "same region next"
    _eject(runtime, "10.0.0.4")
    assert set(_picks(runtime)) == {"10.0.0.5", "10.0.0.6"}, "then any other region"


def test_failover_names_the_region_to_go_to_first() -> None:
    clock = FakeClock()
    policy = {
        "outlierDetection": OUTLIER,
        "loadBalancer": {"localityLbSetting": {"failover": [{"from": "us-east", "to": "eu-west"}]}},
    }
    runtime = _runtime(_cluster(policy), clock)
    _eject(runtime, "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")
    assert set(_picks(runtime)) == {"10.0.0.6"}


def test_a_partly_healthy_priority_spills_over_as_envoy_does() -> None:
    """Two of three local endpoints left: health min(1, 1.4 * 2/3) = 93.3 %, so 6.7 % goes one level down."""
    localities = {
        "10.0.1.1": "us-east/a/rack1",
        "10.0.1.2": "us-east/a/rack1",
        "10.0.1.3": "us-east/a/rack1",
        "10.0.1.4": "us-east/a/rack2",
    }
    clock = FakeClock()
    runtime = _runtime(_cluster({"outlierDetection": OUTLIER}, localities), clock)
    _eject(runtime, "10.0.1.1")
    n = 20000
    counts = _picks(runtime, n)
    expected = n * (1 - 1.4 * 2 / 3)
    assert abs(counts["10.0.1.4"] - expected) <= 4 * math.sqrt(expected), counts
    assert counts["10.0.1.1"] == 0


def test_without_outlier_detection_or_own_locality_or_when_disabled_every_endpoint_takes_traffic() -> None:
    disabled = {"outlierDetection": OUTLIER, "loadBalancer": {"localityLbSetting": {"enabled": False}}}
    for runtime in (
        _runtime(_cluster(None), FakeClock()),
        _runtime(_cluster({"outlierDetection": OUTLIER}), FakeClock(), locality=None),
        _runtime(_cluster(disabled), FakeClock()),
    ):
        assert set(_picks(runtime)) == set(LOCALITIES)


def test_distribute_splits_by_weight_and_scales_by_health() -> None:
    policy = {
        "loadBalancer": {
            "localityLbSetting": {
                "distribute": [{"from": "us-east/a/*", "to": {"us-east/a/*": 80, "us-west/*": 20}}],
            }
        },
        "outlierDetection": OUTLIER,
    }
    clock = FakeClock()
    runtime = _runtime(_cluster(policy), clock)
    n = 20000
    counts = _picks(runtime, n)
    east = counts["10.0.0.1"] + counts["10.0.0.2"] + counts["10.0.0.3"]
    assert abs(east - 0.8 * n) <= 4 * math.sqrt(n * 0.8 * 0.2), counts
    assert counts["10.0.0.5"] == n - east, "us-west takes the rest; unnamed localities take nothing"
    _eject(runtime, "10.0.0.5")
    assert set(_picks(runtime)) == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}


@pytest.mark.parametrize(
    ("pattern", "locality", "expected"),
    [
        ("us-east/a/*", "us-east/a/rack1", True),
        ("us-east/*", "us-east/b/rack9", True),
        ("us-east", "us-east/b/rack9", True),
        ("*/a", "eu-west/a/x", True),
        ("us-east/a/rack2", "us-east/a/rack1", False),
        ("us-west/*", "us-east/a/rack1", False),
    ],
)
def test_locality_patterns_match_as_in_istio(pattern: str, locality: str, expected: bool) -> None:
    assert matches(pattern, parse_locality(locality)) is expected


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"distribute": [{"from": "a/*", "to": {"a/*": 60}}]}, "add up to 60, not 100"),
        ({"distribute": [{"from": "a", "to": {"a": 100}}], "failover": [{"from": "a", "to": "b"}]}, "not both"),
        ({"failover": [{"from": "a", "to": "a"}]}, "same region"),
        ({"failover": [{"from": "a/z", "to": "b"}]}, "region name"),
        ({"distribute": [{"from": "a//b", "to": {"a": 100}}]}, "is not a locality"),
    ],
)
def test_bad_locality_settings_are_refused_with_the_reason(setting: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LoadBalancerSettings.model_validate({"localityLbSetting": setting})


def test_a_retry_with_remote_localities_leaves_the_tried_priority_for_the_next() -> None:
    """retryRemoteLocalities: the priority of the endpoints tried so far is left out while another has
    endpoints; without it a retry stays in the caller's subzone (another endpoint there)."""
    runtime = _runtime(_cluster({"outlierDetection": OUTLIER}), FakeClock())
    tried = {("10.0.0.1", 9080)}
    same_place = Counter(runtime.pick(exclude=tried).address for _ in range(500))
    assert same_place == Counter({"10.0.0.2": 500})
    remote = Counter(runtime.pick(exclude=tried, tried_localities=tried).address for _ in range(500))
    assert set(remote) == {"10.0.0.3"}  # the next priority: same zone, another subzone
    further = {("10.0.0.1", 9080), ("10.0.0.3", 9080)}
    assert {runtime.pick(exclude=further, tried_localities=further).address for _ in range(200)} == {"10.0.0.4"}
    everywhere = {(address, 9080) for address in LOCALITIES}
    assert {runtime.pick(tried_localities=everywhere).address for _ in range(200)} <= {"10.0.0.1", "10.0.0.2"}
