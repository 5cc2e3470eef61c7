"""Locality-aware load balancing, as Istio configures Envoy: failover by priority, or a weighted distribute.

Localities are `region/zone/subzone`: a sidecar's own from `isthmus proxy run --locality`, an endpoint's from
its Consul Meta `locality` (a label, so subsets can select on it too). A pattern's segments may be `*` or
left out (any), as in Istio. Nothing here applies while this sidecar's locality is unknown.

- **Failover** (the default once the cluster has outlierDetection, as in Istio; `enabled: false` turns it
  off): endpoints get a priority by how much of the caller's locality they share: 0 same region, zone and
  subzone; 1 same region and zone; 2 same region; then, with `failover` naming a region for the caller's,
  that region; then the rest. Traffic goes to the best priority while it is healthy enough, and spills over
  as Envoy does: a priority's health is 1.4 x its share of available endpoints (at most 100 %), each
  priority takes what the ones before left of 100 % up to its health, and when the healths add up to less
  than 100 % the loads are scaled to fill it.
- **Distribute**: the first rule whose `from` matches the caller's locality splits traffic over its `to`
  localities by weight; a locality with fewer available endpoints gets proportionally less (the same 1.4
  factor), and an endpoint no `to` names gets none unless no named locality has any left.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from services.proxy.lb import EndpointKey, endpoint_key
from shared.consul import META_LOCALITY
from shared.model.destination_rule import LocalityLoadBalancerSetting
from shared.model.proxy_config import Endpoint

LOCALITY_LABEL = META_LOCALITY
OVERPROVISIONING = 1.4
"""Envoy's overprovisioning factor: a priority 72 % available still takes all of its traffic."""


def parse_locality(value: str | None) -> tuple[str, str, str]:
    """`region/zone/subzone` (shorter forms allowed) as three parts, missing ones empty."""
    parts = (value or "").strip().split("/")
    parts += [""] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def matches(pattern: str, locality: tuple[str, str, str]) -> bool:
    """Istio's locality match: each segment of `region/zone/subzone` equal, `*`, or left out (any)."""
    wanted = parse_locality(pattern)
    return all(want in ("", "*") or want == have for want, have in zip(wanted, locality, strict=True)) and (
        wanted[0] != ""
    )


def endpoint_locality(endpoint: Endpoint) -> tuple[str, str, str]:
    return parse_locality(endpoint.labels.get(LOCALITY_LABEL))


@dataclass(frozen=True, slots=True)
class _Levels:
    """Endpoint groups in order of preference (priorities, or distribute's `to` localities) and their weights."""

    groups: tuple[frozenset[EndpointKey], ...]
    totals: tuple[int, ...]
    weights: tuple[float, ...]
    """Failover: 100 each (a priority takes what it can); distribute: the configured weights."""
    spill: bool
    """Failover spills from one priority to the next; distribute draws by health-scaled weight."""


class LocalityBalancer:
    """Narrows a cluster's available endpoints to the locality group this request goes to."""

    def __init__(self, levels: _Levels, rng: random.Random) -> None:
        self._levels = levels
        self._rng = rng

    @classmethod
    def build(
        cls,
        own: str | None,
        setting: LocalityLoadBalancerSetting | None,
        has_outlier_detection: bool,
        endpoints: Sequence[Endpoint],
        rng: random.Random,
    ) -> LocalityBalancer | None:
        """None when locality plays no part: own locality unknown, turned off, or failover without outlier
        detection (Istio applies locality failover only with it)."""
        if not own or (setting is not None and setting.enabled is False):
            return None
        caller = parse_locality(own)
        if setting is not None and setting.distribute:
            for rule in setting.distribute:
                if matches(rule.from_, caller):
                    return cls(_distribute(rule.to, endpoints), rng)
            return None
        if not has_outlier_detection:
            return None
        failover_to = next(
            (rule.to for rule in (setting.failover if setting else []) if rule.from_ == caller[0]),
            None,
        )
        return cls(_priorities(caller, failover_to, endpoints), rng)

    def narrow(self, available: list[Endpoint]) -> list[Endpoint]:
        """The available endpoints of the group drawn for this request (all of them if no group has any)."""
        levels = self._levels
        counts = [0] * len(levels.groups)
        members: list[list[Endpoint]] = [[] for _ in levels.groups]
        for endpoint in available:
            key = endpoint_key(endpoint)
            for index, group in enumerate(levels.groups):
                if key in group:
                    counts[index] += 1
                    members[index].append(endpoint)
                    break
        health = [
            min(1.0, OVERPROVISIONING * count / total) if total else 0.0
            for count, total in zip(counts, levels.totals, strict=True)
        ]
        loads = _spill(health) if levels.spill else [w * h for w, h in zip(levels.weights, health, strict=True)]
        total = sum(loads)
        if total <= 0:
            return available
        draw = self._rng.random() * total
        for index, load in enumerate(loads):
            draw -= load
            if draw < 0 and members[index]:
                return members[index]
        return next((group for group in reversed(members) if group), available)


def _spill(health: list[float]) -> list[float]:
    """Envoy's priority loads: each takes what is left up to its health; scaled up when health is short."""
    loads = []
    left = 1.0
    for value in health:
        load = min(value, left)
        loads.append(load)
        left -= load
    return loads


def _priorities(caller: tuple[str, str, str], failover_to: str | None, endpoints: Sequence[Endpoint]) -> _Levels:
    groups: list[set[EndpointKey]] = [set() for _ in range(5)]
    for endpoint in endpoints:
        region, zone, subzone = endpoint_locality(endpoint)
        if region == caller[0] and zone == caller[1] and subzone == caller[2]:
            level = 0
        elif region == caller[0] and zone == caller[1]:
            level = 1
        elif region == caller[0]:
            level = 2
        elif failover_to is not None and region == failover_to:
            level = 3
        else:
            level = 4
        groups[level].add(endpoint_key(endpoint))
    kept = [frozenset(group) for group in groups if group]
    return _Levels(tuple(kept), tuple(len(group) for group in kept), tuple(1.0 for _ in kept), spill=True)


def _distribute(weights: dict[str, int], endpoints: Sequence[Endpoint]) -> _Levels:
    groups: list[set[EndpointKey]] = [set() for _ in weights]
    patterns = list(weights)
    for endpoint in endpoints:
        locality = endpoint_locality(endpoint)
        for index, pattern in enumerate(patterns):
            if matches(pattern, locality):
                groups[index].add(endpoint_key(endpoint))
                break
    return _Levels(
        tuple(frozenset(group) for group in groups),
        tuple(len(group) for group in groups),
        tuple(float(weights[pattern]) for pattern in patterns),
        spill=False,
    )
