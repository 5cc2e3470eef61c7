"""failoverPriority from config to endpoint choice: label priorities, overrides, topology keys, spill-over."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest

from services.proxy.balancer import ClusterRuntime, ClusterRuntimes
from services.proxy.locality import label_priority, topology_labels
from services.proxy.registration import Registration
from shared.clock import FakeClock
from shared.model.proxy_config import Cluster

OUTLIER = {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "30s", "maxEjectionPercent": 100}
CALLER_LOCALITY = "us-east/a/rack1"
CALLER_LABELS = {"app": "web", "version": "v1", "shard": "s1", "locality": CALLER_LOCALITY}
TOPOLOGY = [
    "topology.istio.io/network",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
]


def _cluster(setting: dict[str, Any] | None, endpoints: dict[str, dict[str, str]], outlier: bool = True) -> Cluster:
    policy: dict[str, Any] = {"outlierDetection": OUTLIER} if outlier else {}
    if setting is not None:
        policy["loadBalancer"] = {"localityLbSetting": setting}
    return Cluster.model_validate(
        {
            "name": "outbound|80||reviews",
            "host": "reviews",
            "port": 80,
            "endpoints": [
                {"address": address, "port": 9080, "labels": labels} for address, labels in endpoints.items()
            ],
            "trafficPolicy": policy,
        }
    )


def _runtime(
    cluster: Cluster,
    locality: str | None = CALLER_LOCALITY,
    labels: Mapping[str, str] | None = CALLER_LABELS,
) -> ClusterRuntime:
    return ClusterRuntimes(FakeClock(), random.Random(7), locality, labels).get(cluster)


def _eject(runtime: ClusterRuntime, *addresses: str) -> None:
    for endpoint in runtime.config.endpoints:
        if endpoint.address in addresses:
            runtime.report(endpoint, 503)


def _picks(runtime: ClusterRuntime, n: int = 2000) -> Counter[str]:
    return Counter(runtime.pick().address for _ in range(n))


def _walk(runtime: ClusterRuntime) -> list[set[str]]:
    """The endpoints that take traffic, priority by priority, ejecting each group in turn."""
    groups = []
    left = {endpoint.address for endpoint in runtime.config.endpoints}
    while left:
        picked = set(_picks(runtime, 400))
        groups.append(picked)
        _eject(runtime, *picked)
        left -= picked
    return groups


LABELLED = {
    "10.0.0.1": {"version": "v1", "shard": "s1"},
    "10.0.0.2": {"version": "v1", "shard": "s1"},
    "10.0.0.3": {"version": "v1", "shard": "s2"},
    "10.0.0.4": {"version": "v2", "shard": "s1"},
    "10.0.0.5": {},
}


@pytest.mark.parametrize(
    ("wanted", "labels", "priority"),
    [
        ([("version", "v1"), ("shard", "s1")], {"version": "v1", "shard": "s1"}, 0),
        ([("version", "v1"), ("shard", "s1")], {"version": "v1", "shard": "s2"}, 1),
        ([("version", "v1"), ("shard", "s1")], {"version": "v2", "shard": "s1"}, 2),
        ([("version", "v1"), ("shard", "s1")], {}, 2),
        ([("version", "v1"), ("shard", "")], {"version": "v1"}, 0),
        ([("a", "1"), ("b", "2"), ("c", "3")], {"a": "1", "b": "2", "c": "x"}, 1),
        ([("a", "1"), ("b", "2"), ("c", "3")], {"a": "1", "b": "x", "c": "3"}, 2),
    ],
)
def test_priority_is_how_many_keys_match_from_the_first(
    wanted: list[tuple[str, str]], labels: dict[str, str], priority: int
) -> None:
    assert label_priority(wanted, labels) == priority


def test_topology_keys_come_from_the_locality_label_and_a_set_part_wins() -> None:
    assert topology_labels({"locality": "us-east/a", "topology.kubernetes.io/zone": "z9", "app": "web"}) == {
        "locality": "us-east/a",
        "app": "web",
        "topology.kubernetes.io/region": "us-east",
        "topology.kubernetes.io/zone": "a",
    }
    assert topology_labels({"topology.istio.io/subzone": "rack9"}) == {"topology.istio.io/subzone": "rack9"}


def test_traffic_walks_the_label_priorities_as_endpoints_are_ejected() -> None:
    runtime = _runtime(_cluster({"failoverPriority": ["version", "shard"]}, LABELLED))
    assert _walk(runtime) == [
        {"10.0.0.1", "10.0.0.2"},
        {"10.0.0.3"},
        {"10.0.0.4", "10.0.0.5"},
    ], "v2/s1 shares the shard but not the version first in the list: lowest, with the unlabelled one"


def test_a_key_value_entry_compares_with_the_value_given_not_the_callers() -> None:
    runtime = _runtime(_cluster({"failoverPriority": ["version=v2"]}, LABELLED))
    assert _walk(runtime) == [{"10.0.0.4"}, {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5"}]


def test_topology_keys_order_endpoints_by_network_region_zone_subzone() -> None:
    endpoints = {
        "10.0.1.1": {"locality": "us-east/a/rack1"},
        "10.0.1.2": {"locality": "us-east/a/rack2"},
        "10.0.1.3": {"locality": "us-east/b/rack1"},
        "10.0.1.4": {"locality": "us-west/a/rack1"},
        "10.0.1.5": {"locality": "eu-west/a/rack1"},
    }
    runtime = _runtime(_cluster({"failoverPriority": TOPOLOGY}, endpoints), labels={})
    assert _walk(runtime) == [{"10.0.1.1"}, {"10.0.1.2"}, {"10.0.1.3"}, {"10.0.1.4", "10.0.1.5"}]


def test_without_failover_the_locality_plays_no_part() -> None:
    endpoints = {
        "10.0.2.1": {"version": "v2", "locality": CALLER_LOCALITY},
        "10.0.2.2": {"version": "v1", "locality": "eu-west/a/rack1"},
        "10.0.2.3": {"version": "v1", "locality": "us-west/a/rack1"},
    }
    runtime = _runtime(_cluster({"failoverPriority": ["version"]}, endpoints))
    assert _walk(runtime) == [{"10.0.2.2", "10.0.2.3"}, {"10.0.2.1"}]


def test_with_failover_the_locality_orders_endpoints_within_each_label_priority() -> None:
    endpoints = {
        "10.0.3.1": {"version": "v2", "locality": CALLER_LOCALITY},
        "10.0.3.2": {"version": "v1", "locality": "us-west/a/rack1"},
        "10.0.3.3": {"version": "v1", "locality": "eu-west/a/rack1"},
        "10.0.3.4": {"version": "v1", "locality": "us-east/b/rack1"},
    }
    setting = {"failoverPriority": ["version"], "failover": [{"from": "us-east", "to": "eu-west"}]}
    runtime = _runtime(_cluster(setting, endpoints))
    assert _walk(runtime) == [{"10.0.3.4"}, {"10.0.3.3"}, {"10.0.3.2"}, {"10.0.3.1"}]


def test_label_priorities_need_no_locality_of_the_caller() -> None:
    runtime = _runtime(_cluster({"failoverPriority": ["version", "shard"]}, LABELLED), locality=None)
    assert set(_picks(runtime)) == {"10.0.0.1", "10.0.0.2"}


def test_a_partly_available_priority_spills_over_as_envoy_does() -> None:
    """Two of three v1 endpoints left: health min(1, 1.4 * 2/3) = 93.3 %, so 6.7 % goes to v2."""
    endpoints = {
        "10.0.4.1": {"version": "v1"},
        "10.0.4.2": {"version": "v1"},
        "10.0.4.3": {"version": "v1"},
        "10.0.4.4": {"version": "v2"},
    }
    runtime = _runtime(_cluster({"failoverPriority": ["version"]}, endpoints))
    _eject(runtime, "10.0.4.1")
    n = 20000
    counts = _picks(runtime, n)
    expected = n * (1 - 1.4 * 2 / 3)
    assert abs(counts["10.0.4.4"] - expected) <= 4 * math.sqrt(expected), counts
    assert counts["10.0.4.1"] == 0


def test_no_priorities_without_outlier_detection_or_caller_labels_or_when_disabled() -> None:
    setting = {"failoverPriority": ["version"]}
    for runtime in (
        _runtime(_cluster(setting, LABELLED, outlier=False)),
        _runtime(_cluster(setting, LABELLED), locality=None, labels=None),
        _runtime(_cluster({**setting, "enabled": False}, LABELLED)),
    ):
        assert set(_picks(runtime)) == set(LABELLED)


def test_a_sidecars_own_labels_are_those_its_endpoints_show_callers() -> None:
    registration = Registration(
        proxy_id="web-default-vm1-15006",
        service="web",
        namespace="default",
        service_account="web",
        version="v1",
        address="10.0.0.9",
        inbound_port=15006,
        health_port=15021,
        app_port=8080,
        admin_port=15000,
        locality=CALLER_LOCALITY,
    )
    assert registration.labels() == {
        "app": "web",
        "locality": CALLER_LOCALITY,
        "namespace": "default",
        "service-account": "web",
        "version": "v1",
    }
