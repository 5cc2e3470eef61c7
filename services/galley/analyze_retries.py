"""ISM0023: a DestinationRule sets `connectionPool.http.maxRetries` where a `retryBudget` applies.

A retry budget replaces maxRetries (Envoy's circuit breaker uses the budget when it has one), so the
maxRetries is ignored. Checked as pilot merges the policies: the budget is not per port, and a subset's
replaces the rule's top-level one; a connectionPool is the port-level entry's, the subset's, or the rule's.
"""

from __future__ import annotations

from collections.abc import Iterator

from services.galley.analyze_base import MAX_RETRIES_UNDER_BUDGET, Message, label
from shared.model import DestinationRule
from shared.model.destination_rule import ConnectionPoolSettings, RetryBudget, TrafficPolicy


def _pools(policy: TrafficPolicy | None, path: str) -> Iterator[tuple[str, ConnectionPoolSettings | None]]:
    if policy is None:
        return
    yield f"{path}.connectionPool", policy.connection_pool
    for index, level in enumerate(policy.port_level_settings):
        yield f"{path}.portLevelSettings[{index}].connectionPool", level.connection_pool


def _ignored(pool: ConnectionPoolSettings | None) -> bool:
    return pool is not None and pool.http is not None and pool.http.max_retries is not None


def max_retries_messages(rules: list[DestinationRule]) -> list[Message]:
    messages: list[Message] = []
    for rule in rules:
        top = rule.spec.traffic_policy
        top_budget = top.retry_budget if top is not None else None
        levels: list[tuple[str, ConnectionPoolSettings | None, RetryBudget | None]] = [
            (path, pool, top_budget) for path, pool in _pools(top, "spec.trafficPolicy")
        ]
        for index, subset in enumerate(rule.spec.subsets):
            policy = subset.traffic_policy
            budget = (policy.retry_budget if policy is not None else None) or top_budget
            levels += [(path, pool, budget) for path, pool in _pools(policy, f"spec.subsets[{index}].trafficPolicy")]
        for path, pool, budget in levels:
            if budget is not None and _ignored(pool):
                text = (
                    f"{label(rule)}: {path}.http.maxRetries is ignored: a retryBudget applies to the same traffic, "
                    "and the budget replaces maxRetries; remove one of them"
                )
                messages.append(Message(MAX_RETRIES_UNDER_BUDGET, text, frozenset({label(rule)})))
    return messages
