"""Generation of clusters: one per (host, port, subset) the routes reference, with endpoints and policy.

Endpoints of a cluster are the service's catalog instances (a subset keeps those whose labels contain the
subset's labels). A meshed instance's endpoint carries the SPIFFE identity its sidecar must present (an
instance whose Meta makes no valid identity is left out: never reached without one); a plain instance
has identity None. Endpoint.healthy is Consul's verdict (all checks passing). The
DestinationRule for a service is the first, in (namespace, name) order, whose host resolves to it. The
cluster's traffic policy is that rule's top-level policy, then its port-level settings for the cluster's
port, then the subset's policy (and the subset's port-level settings), each overriding field by field.
A subset that no DestinationRule defines gives a cluster without endpoints (and a log line).
"""

from __future__ import annotations

import logging

from services.pilot.generate.hosts import HostIndex
from services.pilot.generate.routes import ClusterRef
from services.pilot.snapshot import Instance, Snapshot
from shared.identity import SpiffeId
from shared.identity.spiffe import InvalidSpiffeId
from shared.model import DestinationRule
from shared.model.destination_rule import TrafficPolicy
from shared.model.proxy_config import Cluster, Endpoint

log = logging.getLogger(__name__)

_POLICY_FIELDS = ("load_balancer", "connection_pool", "outlier_detection", "tls")


def endpoint(instance: Instance, trust_domain: str) -> Endpoint | None:
    """The instance as an endpoint; None (and a log line) when its Meta gives no valid SPIFFE identity."""
    identity = None
    if instance.meshed:
        try:
            identity = SpiffeId(trust_domain, instance.namespace, instance.service_account).uri
        except InvalidSpiffeId as err:
            log.warning("endpoint %s of %s left out: %s", instance.service_id, instance.service, err)
            return None
    return Endpoint(
        address=instance.address,
        port=instance.port,
        labels=instance.labels,
        identity=identity,
        healthy=instance.healthy,
    )


def destination_rule_for(host: str, rules: list[DestinationRule], hosts: HostIndex) -> DestinationRule | None:
    """The rule for a resolved cluster host (a catalog service name or a qualified unknown host)."""
    ordered = sorted(rules, key=lambda dr: (dr.metadata.namespace, dr.metadata.name))
    for rule in ordered:
        if hosts.cluster_host(rule.spec.host, rule.metadata.namespace) == host:
            return rule
    return None


def _overlay(base: TrafficPolicy | None, top: TrafficPolicy | None, port: int) -> TrafficPolicy | None:
    """`top` (then its settings for `port`) over `base`, field by field; port-level lists are folded in."""
    if top is None:
        return base
    merged = dict.fromkeys(_POLICY_FIELDS)
    if base is not None:
        merged.update({name: getattr(base, name) for name in _POLICY_FIELDS})
    layers: list[object] = [top]
    layers += [level for level in top.port_level_settings if level.port.number == port]
    for layer in layers:
        for name in _POLICY_FIELDS:
            value = getattr(layer, name)
            if value is not None:
                merged[name] = value
    return TrafficPolicy.model_validate(merged)


def traffic_policy(rule: DestinationRule | None, port: int, subset: str | None) -> TrafficPolicy | None:
    if rule is None:
        return None
    policy = _overlay(None, rule.spec.traffic_policy, port)
    chosen = rule.spec.subset(subset) if subset else None
    if chosen is not None:
        policy = _overlay(policy, chosen.traffic_policy, port)
    return policy


def cluster(
    ref: ClusterRef, snapshot: Snapshot, rules: list[DestinationRule], hosts: HostIndex, trust_domain: str
) -> Cluster:
    service = hosts.by_name(ref.host)
    instances = list(snapshot.services.get(service.name, ())) if service else []
    rule = destination_rule_for(ref.host, rules, hosts)
    if ref.subset is not None:
        subset = rule.spec.subset(ref.subset) if rule else None
        if subset is None:
            log.warning("cluster %s: no DestinationRule defines subset %r of %s", ref.name, ref.subset, ref.host)
            instances = []
        else:
            wanted = subset.labels.items()
            instances = [i for i in instances if wanted <= i.labels.items()]
    found = (endpoint(instance, trust_domain) for instance in instances)
    endpoints = sorted((e for e in found if e is not None), key=lambda e: (e.address, e.port, e.identity or ""))
    return Cluster(
        name=ref.name,
        host=ref.host,
        port=ref.port,
        subset=ref.subset,
        endpoints=endpoints,
        traffic_policy=traffic_policy(rule, ref.port, ref.subset),
    )


def clusters(
    refs: set[ClusterRef], snapshot: Snapshot, rules: list[DestinationRule], hosts: HostIndex, trust_domain: str
) -> list[Cluster]:
    by_name = {ref.name: ref for ref in refs}
    return [cluster(by_name[name], snapshot, rules, hosts, trust_domain) for name in sorted(by_name)]
