"""ISM0023: a maxRetries that a retryBudget overrides, found where pilot's merge puts them together."""

from __future__ import annotations

from typing import Any

from services.galley.analyze import analyze_messages
from shared.model import parse_resource


def rule(spec: dict[str, Any]) -> Any:
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {"host": "reviews", **spec},
        }
    )


def found(spec: dict[str, Any]) -> list[str]:
    return [str(m) for m in analyze_messages([rule(spec)]) if m.code == "ISM0023"]


POOL = {"http": {"maxRetries": 2}}
BUDGET = {"percent": 10}


def test_a_max_retries_beside_a_budget_is_reported_with_its_path() -> None:
    assert found({"trafficPolicy": {"connectionPool": POOL, "retryBudget": BUDGET}}) == [
        "[ISM0023] DestinationRule shop/reviews: spec.trafficPolicy.connectionPool.http.maxRetries is ignored: a "
        "retryBudget applies to the same traffic, and the budget replaces maxRetries; remove one of them"
    ]


def test_the_top_level_budget_reaches_port_levels_and_subsets() -> None:
    spec = {
        "trafficPolicy": {
            "retryBudget": BUDGET,
            "portLevelSettings": [{"port": {"number": 9080}, "connectionPool": POOL}],
        },
        "subsets": [{"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": {"connectionPool": POOL}}],
    }
    paths = [message.split(": ")[1] for message in found(spec)]
    assert paths == [
        "spec.trafficPolicy.portLevelSettings[0].connectionPool.http.maxRetries is ignored",
        "spec.subsets[0].trafficPolicy.connectionPool.http.maxRetries is ignored",
    ]


def test_without_a_budget_max_retries_counts() -> None:
    assert found({"trafficPolicy": {"connectionPool": POOL}}) == []
    assert found({"subsets": [{"name": "v1", "trafficPolicy": {"connectionPool": POOL}}]}) == []
