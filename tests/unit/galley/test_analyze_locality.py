"""ISM0016: locality failover asked for in a traffic policy whose merged result has no outlierDetection."""

from __future__ import annotations

from typing import Any

from services.galley.analyze import analyze
from shared.model import parse_resource

FAILOVER = {"loadBalancer": {"localityLbSetting": {"failoverPriority": ["version"]}}}
OUTLIERS = {"outlierDetection": {"consecutive5xxErrors": 2}}


def rule(spec: dict[str, Any]) -> Any:
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "product", "namespace": "shop"},
            "spec": {"host": "product", **spec},
        }
    )


def test_failover_without_outlier_detection_is_reported_with_its_path() -> None:
    assert analyze([rule({"trafficPolicy": FAILOVER})]) == [
        "[ISM0016] DestinationRule shop/product: spec.trafficPolicy.loadBalancer.localityLbSetting: failover needs "
        "outlierDetection in the same traffic policy; without it traffic is balanced over every endpoint and never "
        "fails over"
    ]


def test_failover_with_outlier_detection_is_quiet() -> None:
    assert analyze([rule({"trafficPolicy": {**FAILOVER, **OUTLIERS}})]) == []


def test_a_subset_takes_the_rules_outlier_detection() -> None:
    spec = {
        "trafficPolicy": OUTLIERS,
        "subsets": [{"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": FAILOVER}],
    }
    assert analyze([rule(spec)]) == []


def test_a_port_level_entry_replaces_the_outlier_detection_above_it() -> None:
    spec = {"trafficPolicy": {**OUTLIERS, "portLevelSettings": [{"port": {"number": 80}, **FAILOVER}]}}
    (warning,) = analyze([rule(spec)])
    assert warning.startswith("[ISM0016] DestinationRule shop/product: spec.trafficPolicy.portLevelSettings[0]")


def test_failover_turned_off_is_quiet() -> None:
    off = {"loadBalancer": {"localityLbSetting": {"failoverPriority": ["version"], "enabled": False}}}
    assert analyze([rule({"trafficPolicy": off})]) == []
