"""ISM0016: a DestinationRule asks for locality failover (`failover` or `failoverPriority`) in a traffic policy
whose merged result has no `outlierDetection`.

Locality failover moves traffic only as outlier detection ejects endpoints, so without it the setting does
nothing (the sidecar balances over every endpoint). Istio's validation warns the same way ("outlier detection
policy must be provided for failover"). Checked per policy level as pilot merges them: a port-level entry
replaces every component, a subset's policy takes the rule's top-level outlierDetection when it sets none.
"""

from __future__ import annotations

from collections.abc import Iterator

from services.galley.analyze_base import FAILOVER_WITHOUT_OUTLIER_DETECTION, Message, label
from shared.model import DestinationRule
from shared.model.destination_rule import LoadBalancerSettings, OutlierDetection, TrafficPolicy


def _levels(
    policy: TrafficPolicy | None, path: str, inherited: OutlierDetection | None = None
) -> Iterator[tuple[str, LoadBalancerSettings | None, OutlierDetection | None]]:
    if policy is None:
        return
    yield path, policy.load_balancer, policy.outlier_detection or inherited
    for index, level in enumerate(policy.port_level_settings):
        yield f"{path}.portLevelSettings[{index}]", level.load_balancer, level.outlier_detection


def _asks_failover(balancer: LoadBalancerSettings | None) -> bool:
    setting = balancer.locality_lb_setting if balancer is not None else None
    return setting is not None and setting.enabled is not False and bool(setting.failover or setting.failover_priority)


def failover_messages(rules: list[DestinationRule]) -> list[Message]:
    messages: list[Message] = []
    for rule in rules:
        top = rule.spec.traffic_policy
        levels = list(_levels(top, "spec.trafficPolicy"))
        for index, subset in enumerate(rule.spec.subsets):
            inherited = top.outlier_detection if top is not None else None
            levels += _levels(subset.traffic_policy, f"spec.subsets[{index}].trafficPolicy", inherited)
        for path, balancer, outlier in levels:
            if _asks_failover(balancer) and outlier is None:
                text = (
                    f"{label(rule)}: {path}.loadBalancer.localityLbSetting: failover needs outlierDetection in the "
                    "same traffic policy; without it traffic is balanced over every endpoint and never fails over"
                )
                messages.append(Message(FAILOVER_WITHOUT_OUTLIER_DETECTION, text, frozenset({label(rule)})))
    return messages
