"""DestinationRule loadBalancer warmup: both Istio forms, Istio's defaults, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.model import DestinationRule
from shared.model.destination_rule import LoadBalancerSettings


def _rule(lb: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"host": "reviews", "trafficPolicy": {"loadBalancer": lb}},
    }


def _errors(lb: dict[str, Any]) -> dict[tuple[str | int, ...], str]:
    with pytest.raises(ValidationError) as info:
        DestinationRule.model_validate(_rule(lb))
    return {error["loc"]: error["msg"] for error in info.value.errors()}


LB = ("spec", "trafficPolicy", "loadBalancer")


def test_warmup_duration_secs_is_warmup_with_istios_defaults() -> None:
    warmup = LoadBalancerSettings.model_validate({"warmupDurationSecs": "45s"}).slow_start()
    assert warmup is not None
    assert (warmup.duration, warmup.minimum_percent, warmup.aggression) == (45.0, 10.0, 1.0)


def test_warmup_takes_its_fields_and_round_trips() -> None:
    settings = LoadBalancerSettings.model_validate(
        {"simple": "LEAST_REQUEST", "warmup": {"duration": "2m", "minimumPercent": 25, "aggression": 3}}
    )
    warmup = settings.slow_start()
    assert warmup is not None and (warmup.duration, warmup.minimum_percent, warmup.aggression) == (120.0, 25.0, 3.0)
    assert settings.model_dump(by_alias=True, exclude_defaults=True)["warmup"] == {
        "duration": "120s",
        "minimumPercent": 25.0,
        "aggression": 3.0,
    }


def test_warmup_does_not_apply_to_random_or_consistent_hash() -> None:
    assert LoadBalancerSettings.model_validate({"simple": "RANDOM", "warmupDurationSecs": "45s"}).slow_start() is None
    hashed = {"consistentHash": {"httpHeaderName": "x-user"}, "warmupDurationSecs": "45s"}
    assert LoadBalancerSettings.model_validate(hashed).slow_start() is None


def test_bad_warmups_name_the_field() -> None:
    assert (
        "either warmup or warmupDurationSecs" in _errors({"warmupDurationSecs": "1s", "warmup": {"duration": "1s"}})[LB]
    )
    assert "above 0s" in _errors({"warmup": {"duration": "0s"}})[(*LB, "warmup", "duration")]
    assert (*LB, "warmup", "aggression") in _errors({"warmup": {"duration": "1s", "aggression": 0.5}})
    assert (*LB, "warmup", "minimumPercent") in _errors({"warmup": {"duration": "1s", "minimumPercent": 120}})
    assert (*LB, "warmup", "duration") in _errors({"warmup": {}})
