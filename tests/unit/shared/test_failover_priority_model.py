"""DestinationRule localityLbSetting.failoverPriority: the forms accepted, and the refusals naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.model.destination_rule import LoadBalancerSettings, LocalityLoadBalancerSetting


def _setting(setting: dict[str, Any]) -> LocalityLoadBalancerSetting:
    parsed = LoadBalancerSettings.model_validate({"localityLbSetting": setting}).locality_lb_setting
    assert parsed is not None
    return parsed


def test_keys_and_key_value_overrides_are_accepted_in_order() -> None:
    setting = _setting(
        {"failoverPriority": ["topology.istio.io/network", "version=v1", "topology.kubernetes.io/region", "shard="]}
    )
    assert setting.priority_labels() == [
        ("topology.istio.io/network", None),
        ("version", "v1"),
        ("topology.kubernetes.io/region", None),
        ("shard", ""),
    ]


def test_failover_may_come_with_label_keys_other_than_the_locality_ones() -> None:
    setting = _setting({"failoverPriority": ["version"], "failover": [{"from": "us-east", "to": "eu-west"}]})
    assert setting.priority_labels() == [("version", None)]


def test_round_trips_under_istios_field_name() -> None:
    setting = _setting({"failoverPriority": ["version=v1"]})
    assert setting.model_dump(by_alias=True, exclude_defaults=True) == {"failoverPriority": ["version=v1"]}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"failoverPriority": [""]}, "failoverPriority: '' is not a label key"),
        ({"failoverPriority": ["=v1"]}, "failoverPriority: '=v1' is not a label key"),
        ({"failoverPriority": [" version"]}, "failoverPriority: ' version' is not a label key"),
        ({"failoverPriority": ["version=v1=v2"]}, "failoverPriority: 'version=v1=v2' is not a label key"),
        ({"failoverPriority": ["version", "zone", "version"]}, "failoverPriority: label 'version' is listed twice"),
        ({"failoverPriority": ["version", "version=v2"]}, "failoverPriority: label 'version' is listed twice"),
        (
            {"failoverPriority": ["version"], "distribute": [{"from": "a", "to": {"a": 100}}]},
            "either distribute or failoverPriority",
        ),
        (
            {"failoverPriority": ["topology.kubernetes.io/zone"], "failover": [{"from": "a", "to": "b"}]},
            "failoverPriority names 'topology.kubernetes.io/zone': it cannot be set together with failover",
        ),
    ],
)
def test_bad_failover_priorities_are_refused_naming_the_field(setting: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LoadBalancerSettings.model_validate({"localityLbSetting": setting})
