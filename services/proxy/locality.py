"""Locality-aware load balancing, as Istio configures Envoy: failover by priority, or a weighted distribute.

Localities are `region/zone/subzone`: a sidecar's own from `isthmus proxy run --locality`, an endpoint's from
its Consul Meta `locality` (a label, so subsets can select on it too). A pattern's segments may be `*` or
left out (any), as in Istio. Locality failover and distribute need this sidecar's locality; failoverPriority
on plain labels does not.

- **Failover** (the default once the cluster has outlierDetection, as in Istio; `enabled: false` turns it
  off): endpoints get a priority by how much of the caller's locality they share: 0 same region, zone and
  subzone; 1 same region and zone; 2 same region; then, with `failover` naming a region for the caller's,
  that region; then the rest. Traffic goes to the best priority while it is healthy enough, and spills over
  as Envoy does: a priority's health is 1.4 x its share of available endpoints (at most 100 %), each
  priority takes what the ones before left of 100 % up to its health, and when the healths add up to less
  than 100 % the loads are scaled to fill it.
- **failoverPriority** (also only with outlierDetection) replaces the locality priorities with label ones:
  of N keys, an endpoint whose values equal the caller's for all N gets priority 0, for the first N-1 only
  priority 1, ..., none (the first differs) priority N; a later key counts only while every earlier one
  matched. A label absent on both sides counts as equal. `key=value` compares endpoints with that value
  instead of the caller's. The keys `topology.kubernetes.io/region`, `topology.kubernetes.io/zone` and
  `topology.istio.io/subzone` compare the parts of the `locality` label (a label of that name when the part
  is empty), on the caller and on endpoints alike. Isthmus has one network and one cluster and sets no
  `topology.istio.io/network` or `topology.istio.io/cluster` label, so those keys (like any other) compare
  the labels as given, and match everywhere unless endpoints carry them. The caller's labels are its own
  registration's (app, version, namespace, service-account, locality), as its endpoints show them to others.
  Without them the priorities are not applied (Istio too). With `failover` too, the label priority is the
  major order and, within one, the locality priority above (Istio multiplies the first by 5 and adds the
  second); without it, the locality plays no part. Spill-over is the same as above.
- **Distribute**: the first rule whose `from` matches the caller's locality splits traffic over its `to`
  localities by weight; a locality with fewer available endpoints gets proportionally less (the same 1.4
  factor), and an endpoint no `to` names gets none unless no named locality has any left.

Sources: Istio's API reference for `LocalityLoadBalancerSetting.failoverPriority` (istio/api
networking/v1alpha3/destination_rule.proto; istio.io/latest/docs/reference/config/networking/destination-rule),
and Istio's implementation, pilot/pkg/networking/core/loadbalancer/loadbalancer.go (`ApplyLocalityLoadBalancer`,
`applyFailoverPriorityPerLocality`, `priorityLabelOverrides`, `applyLocalityFailover`), the topology labels of
pilot/pkg/serviceregistry/util/label `AugmentLabels`, and `ValidateLocalityLbSetting`. The reference says
only one of distribute, failover and failoverPriority may be set; Istio's validation and implementation
accept failover with failoverPriority (not with its region/zone/subzone keys), which is followed here.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass

from services.proxy.lb import EndpointKey, endpoint_key
from shared.consul import META_LOCALITY
from shared.model.destination_rule import (
    TOPOLOGY_REGION,
    TOPOLOGY_SUBZONE,
    TOPOLOGY_ZONE,
    LocalityLoadBalancerSetting,
)
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


def topology_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels plus the region, zone and subzone keys from the `locality` label's parts that are set (a
    part that is set wins over a label of that key, as in Istio's AugmentLabels)."""
    augmented = dict(labels)
    parts = parse_locality(labels.get(LOCALITY_LABEL))
    for key, part in zip((TOPOLOGY_REGION, TOPOLOGY_ZONE, TOPOLOGY_SUBZONE), parts, strict=True):
        if part:
            augmented[key] = part
    return augmented


def label_priority(wanted: Sequence[tuple[str, str]], labels: Mapping[str, str]) -> int:
    """failoverPriority's rank of an endpoint: 0 if all `wanted` (key, value) pairs match its (topology)
    labels, else N minus the index of the first that does not; a missing label's value is empty."""
    for index, (key, value) in enumerate(wanted):
        if labels.get(key, "") != value:
            return len(wanted) - index
    return 0


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
        labels: Mapping[str, str] | None = None,
    ) -> LocalityBalancer | None:
        """None when locality plays no part: turned off, failover without outlier detection (Istio applies
        locality failover only with it), or nothing known of the caller that the setting compares.
        `own`: this sidecar's locality; `labels`: its own labels (failoverPriority)."""
        if setting is not None and setting.enabled is False:
            return None
        caller = parse_locality(own) if own else None
        if setting is not None and setting.distribute:
            levels = _distribute_from(setting, caller, endpoints) if caller is not None else None
            return cls(levels, rng) if levels is not None else None
        if not has_outlier_detection:
            return None
        ranks: list[Callable[[Endpoint], int]] = []
        if setting is not None and setting.failover_priority:
            by_labels = _label_rank(setting, own, labels or {})
            if by_labels is not None:
                ranks.append(by_labels)
            if not setting.failover:
                caller = None  # failoverPriority alone replaces the locality priorities
        if caller is not None:
            failover_to = next(
                (rule.to for rule in (setting.failover if setting else []) if rule.from_ == caller[0]),
                None,
            )
            ranks.append(_locality_rank(caller, failover_to))
        if not ranks:
            return None
        return cls(_priorities(ranks, endpoints), rng)

    def narrow(self, available: list[Endpoint], tried: Set[EndpointKey] = frozenset()) -> list[Endpoint]:
        """The available endpoints of the group drawn for this request (all of them if no group has any).
        `tried`: a retry's endpoints so far (retryRemoteLocalities): their groups are left out while another
        group has available endpoints, and the load they had goes to the others."""
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
        if tried:
            left_out = [any(key in group for key in tried) for group in levels.groups]
            if any(count and not out for count, out in zip(counts, left_out, strict=True)):
                counts = [0 if out else count for count, out in zip(counts, left_out, strict=True)]
                members = [[] if out else group for group, out in zip(members, left_out, strict=True)]
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


def _label_rank(
    setting: LocalityLoadBalancerSetting, own: str | None, labels: Mapping[str, str]
) -> Callable[[Endpoint], int] | None:
    """failoverPriority's rank by the caller's (topology) labels; None when the caller has none (Istio too)."""
    caller = dict(labels)
    if own:
        caller[LOCALITY_LABEL] = own
    caller = topology_labels(caller)
    if not caller:
        return None
    wanted = [(key, caller.get(key, "") if value is None else value) for key, value in setting.priority_labels()]
    return lambda endpoint: label_priority(wanted, topology_labels(endpoint.labels))


def _locality_rank(caller: tuple[str, str, str], failover_to: str | None) -> Callable[[Endpoint], int]:
    def rank(endpoint: Endpoint) -> int:
        region, zone, subzone = endpoint_locality(endpoint)
        if region == caller[0] and zone == caller[1] and subzone == caller[2]:
            return 0
        if region == caller[0] and zone == caller[1]:
            return 1
        if region == caller[0]:
            return 2
        if failover_to is not None and region == failover_to:
            return 3
        return 4

    return rank


def _priorities(ranks: Sequence[Callable[[Endpoint], int]], endpoints: Sequence[Endpoint]) -> _Levels:
    """Endpoints grouped by their ranks, compared in order (failoverPriority's first, then locality's); the
    groups that have endpoints become priorities 0, 1, ... without gaps, as Istio renumbers them."""
    groups: dict[tuple[int, ...], set[EndpointKey]] = {}
    for endpoint in endpoints:
        groups.setdefault(tuple(rank(endpoint) for rank in ranks), set()).add(endpoint_key(endpoint))
    kept = [frozenset(groups[level]) for level in sorted(groups)]
    return _Levels(tuple(kept), tuple(len(group) for group in kept), tuple(1.0 for _ in kept), spill=True)


def _distribute_from(
    setting: LocalityLoadBalancerSetting, caller: tuple[str, str, str], endpoints: Sequence[Endpoint]
) -> _Levels | None:
    """The first distribute rule whose `from` matches the caller, as levels; None if none does."""
    rule = next((rule for rule in setting.distribute if matches(rule.from_, caller)), None)
    return _distribute(rule.to, endpoints) if rule is not None else None


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
