"""Generation of clusters: one per (host, port, subset) the routes reference, with endpoints and policy.

Endpoints of a cluster are the service's catalog instances (a subset keeps those whose labels contain the
subset's labels). An endpoint called over mTLS carries the SPIFFE identity its sidecar must present (an
instance whose Meta makes no valid identity is left out: never reached without one); one called in plain
text has identity None. Which, per endpoint (Istio's auto mTLS): the cluster's `tls.mode` when the
DestinationRule sets it (DISABLE: plain text; ISTIO_MUTUAL: mTLS, even to an instance that has no sidecar,
which then fails as in Istio); otherwise mTLS exactly when the instance has a sidecar whose effective
PeerAuthentication mode on its app port (inbound.endpoint_mtls_mode: workload port level > workload >
namespace > mesh-wide) is not DISABLE. Endpoint.healthy is Consul's verdict (all checks passing). Which
DestinationRule a service's clusters take follows Istio's lookup path (hosts.py, `HostIndex.rule_by_host`):
the caller's namespace, then the service's, then the root namespace, among the rules exported to the caller
(see below). The cluster's traffic policy follows Istio's MergeTrafficPolicy: the rule's top-level policy, where a
port-level entry for the cluster's port replaces all four components (loadBalancer, connectionPool,
outlierDetection, tls; what it leaves out falls back to defaults, not to the top level, as Istio's docs
say); then the subset's policy overrides component by component; then the subset's own port-level entry
for the port, if any, replaces all four again. The proxy gets the result without port-level settings.
`retryBudget` and `proxyProtocol` are not per port: the subset's, else the top-level one.
A subset that no DestinationRule defines gives a cluster without endpoints (and a log line).

An instance whose sidecar fronts several app ports (Meta `isthmus-extra-ports`) is reached, in the cluster
of port P, on the inbound port in front of app port P, and that app port's PeerAuthentication mode decides
the transport; a port none of its app ports equals goes to its first HTTP port (snapshot.Instance.serving).

The clusters of a ServiceEntry host take their endpoints from the ServiceEntry (entries.py) and their
policy and subsets from the DestinationRule the same way.

Only the DestinationRules exported to the caller's namespace count (`exportTo`, hosts.py's visibility
classes), and of those only one in the caller's, the service's or the root namespace, in that order (Istio's
push_context.go, `destinationRule`); a host without such a rule has no traffic policy and no subsets (a route
to a subset then gets an empty cluster, as above). The caller's namespace is its visibility class: a namespace
holding a rule that only its own callers use is a class of its own (hosts.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

from services.pilot.generate.entries import entry_endpoints, selected_workloads
from services.pilot.generate.hosts import HostIndex, restricting
from services.pilot.generate.inbound import endpoint_mtls_mode, workload_mtls_modes
from services.pilot.generate.routes import ClusterRef
from services.pilot.snapshot import Instance, Snapshot
from shared.consul import HTTP2_PROTOCOLS
from shared.identity import SpiffeId
from shared.identity.spiffe import InvalidSpiffeId
from shared.model import DestinationRule, PeerAuthentication, Resource, ServiceEntry, WorkloadEntry
from shared.model.destination_rule import TLSMode, TrafficPolicy
from shared.model.peer_authentication import MtlsMode
from shared.model.proxy_config import Cluster, Endpoint

log = logging.getLogger(__name__)

_POLICY_FIELDS = ("load_balancer", "connection_pool", "outlier_detection", "tls")
_WHOLE_POLICY_FIELDS = ("retry_budget", "proxy_protocol")
"""Fields port-level settings do not have (Istio's PortTrafficPolicy)."""


@dataclass(frozen=True)
class MeshSecurity:
    """What decides the transport to an endpoint besides the DestinationRule."""

    trust_domain: str
    root_namespace: str
    peer_authentications: tuple[PeerAuthentication, ...]

    @cached_property
    def _by_namespace(self) -> dict[str, list[PeerAuthentication]]:
        grouped: dict[str, list[PeerAuthentication]] = {}
        for policy in self.peer_authentications:
            grouped.setdefault(policy.metadata.namespace, []).append(policy)
        return grouped

    def policies_for(self, namespace: str) -> list[PeerAuthentication]:
        """The PeerAuthentications that can apply to a workload in `namespace`: the mesh's and its namespace's."""
        mesh = self._by_namespace.get(self.root_namespace, [])
        return mesh if namespace == self.root_namespace else mesh + self._by_namespace.get(namespace, [])


def destination_mode(instance: Instance, security: MeshSecurity, service_port: int) -> MtlsMode:
    """The PeerAuthentication mode the instance's sidecar enforces on the app port serving `service_port`
    (unknown app port: the workload's mode, port-level entries aside)."""
    policies = security.policies_for(instance.namespace)
    port = instance.serving(service_port).app_port
    if port is None:
        return workload_mtls_modes(policies, instance.namespace, instance.labels, security.root_namespace)[0]
    return endpoint_mtls_mode(policies, instance.namespace, instance.labels, port, security.root_namespace)


def uses_mtls(instance: Instance, tls_mode: TLSMode | None, security: MeshSecurity, service_port: int) -> bool:
    if tls_mode is not None:
        return tls_mode == TLSMode.ISTIO_MUTUAL
    return instance.meshed and destination_mode(instance, security, service_port) != MtlsMode.DISABLE


def endpoint(
    instance: Instance, security: MeshSecurity, service_port: int, tls_mode: TLSMode | None = None
) -> Endpoint | None:
    """The instance as an endpoint of a cluster of `service_port`; None (and a log line) when it needs mTLS
    and its Meta gives no valid SPIFFE identity."""
    identity = None
    if uses_mtls(instance, tls_mode, security, service_port):
        try:
            identity = SpiffeId(security.trust_domain, instance.namespace, instance.service_account).uri
        except InvalidSpiffeId as err:
            log.warning("endpoint %s of %s left out: %s", instance.service_id, instance.service, err)
            return None
    return Endpoint(
        address=instance.address,
        port=instance.serving(service_port).port,
        labels=instance.labels,
        identity=identity,
        healthy=instance.healthy,
        weight=instance.weight,
        http2=instance.serving(service_port).protocol in HTTP2_PROTOCOLS,
    )


def destination_rule_for(
    host: str, rules: list[DestinationRule], hosts: HostIndex, caller: str | None, root_namespace: str
) -> DestinationRule | None:
    """The rule callers of class `caller` use for a resolved cluster host (a catalog service name or a qualified
    unknown host): hosts.py's lookup path."""
    return hosts.rule_by_host(rules, caller, root_namespace).get(host)


def _at_port(policy: TrafficPolicy, port: int) -> dict[str, object]:
    """The policy's components as they apply to `port`: a matching port-level entry replaces all of them."""
    for level in policy.port_level_settings:
        if level.port.number == port:
            return {name: getattr(level, name) for name in _POLICY_FIELDS}
    return {name: getattr(policy, name) for name in _POLICY_FIELDS}


def traffic_policy(rule: DestinationRule | None, port: int, subset: str | None) -> TrafficPolicy | None:
    """Istio's MergeTrafficPolicy, then port selection; the result has no port-level settings left."""
    if rule is None:
        return None
    top = rule.spec.traffic_policy
    merged: dict[str, object] = _at_port(top, port) if top is not None else dict.fromkeys(_POLICY_FIELDS)
    chosen = rule.spec.subset(subset) if subset else None
    if chosen is not None and chosen.traffic_policy is not None:
        own = chosen.traffic_policy
        merged.update({name: getattr(own, name) for name in _POLICY_FIELDS if getattr(own, name) is not None})
        for level in own.port_level_settings:
            if level.port.number == port:
                merged = {name: getattr(level, name) for name in _POLICY_FIELDS}
                break
    # Retry budget and PROXY protocol are not per port: the subset's, else the top-level one, whatever
    # port-level entry applies.
    subset_policy = chosen.traffic_policy if chosen is not None else None
    for name in _WHOLE_POLICY_FIELDS:
        mine = getattr(subset_policy, name) if subset_policy is not None else None
        merged[name] = mine if mine is not None else (getattr(top, name) if top is not None else None)
    if all(value is None for value in merged.values()):
        return None
    return TrafficPolicy.model_validate(merged)


def cluster(
    ref: ClusterRef,
    snapshot: Snapshot,
    rules: list[DestinationRule],
    hosts: HostIndex,
    security: MeshSecurity,
    caller: str | None = None,
) -> Cluster:
    """The cluster `ref` names as callers of visibility class `caller` see it."""
    service = hosts.by_name(ref.host)
    choice = hosts.rule_by_host(rules, caller, security.root_namespace)
    rule = choice.get(ref.host)
    chosen = (rule,) if rule is not None and ref.host in choice.caller_dependent else ()
    entry = hosts.entry(service) if service else None
    if entry is not None:
        selected = selected_workloads(entry, snapshot)
        return snapshot.reuse.get(
            _slot(("entry-cluster", ref), rule, entry, chosen=chosen),
            (entry, rule, security.trust_domain, selected),
            lambda: _entry_cluster(ref, entry, rule, security.trust_domain, selected),
        )
    instances = snapshot.services.get(service.name, ()) if service else ()
    namespaces = sorted({instance.namespace for instance in instances})
    policies = tuple(policy for namespace in namespaces for policy in security.policies_for(namespace))
    inputs = (instances, rule, policies, security.trust_domain, security.root_namespace)
    return snapshot.reuse.get(
        _slot(("cluster", ref), rule, chosen=chosen), inputs, lambda: _cluster(ref, list(instances), rule, security)
    )


def _slot(
    base: tuple[object, ...], *resources: Resource | None, chosen: tuple[DestinationRule, ...] = ()
) -> tuple[object, ...]:
    """The reuse slot of a cluster: `base`, plus the name of each restricting resource it is built from and of
    a rule chosen by the caller's namespace (`chosen`), so the visibility classes taking different rules for one
    host each keep their own slot instead of evicting each other's on every pass, and those taking the same
    rule share one. A host whose rule no caller's namespace changes keeps the slot it had before."""
    named = tuple((r.metadata.namespace, r.metadata.name) for r in resources if r is not None and restricting(r))
    named += tuple((r.metadata.namespace, r.metadata.name) for r in chosen if not restricting(r))
    return (*base, *named) if named else base


def _cluster(
    ref: ClusterRef, instances: list[Instance], rule: DestinationRule | None, security: MeshSecurity
) -> Cluster:
    """The cluster from exactly these inputs (`cluster` reuses an earlier result when they are unchanged)."""
    selects = _subset_filter(ref, rule)
    if selects is not None:
        instances = [i for i in instances if selects(i.labels)]
    policy = traffic_policy(rule, ref.port, ref.subset)
    found = (endpoint(instance, security, ref.port, _tls_mode(policy)) for instance in instances)
    endpoints = sorted((e for e in found if e is not None), key=lambda e: (e.address, e.port, e.identity or ""))
    return Cluster(
        name=ref.name,
        host=ref.host,
        port=ref.port,
        subset=ref.subset,
        endpoints=endpoints,
        traffic_policy=policy,
    )


def _subset_filter(ref: ClusterRef, rule: DestinationRule | None) -> Callable[[Mapping[str, str]], bool] | None:
    """Whether an endpoint with these labels belongs to the cluster's subset; None without a subset. A subset
    that no rule defines selects nothing (and is logged)."""
    if ref.subset is None:
        return None
    subset = rule.spec.subset(ref.subset) if rule else None
    if subset is None:
        log.warning("cluster %s: no DestinationRule defines subset %r of %s", ref.name, ref.subset, ref.host)
        return lambda labels: False
    wanted = subset.labels.items()
    return lambda labels: wanted <= labels.items()


def _tls_mode(policy: TrafficPolicy | None) -> TLSMode | None:
    return policy.tls.mode if policy is not None and policy.tls is not None else None


def _entry_cluster(
    ref: ClusterRef,
    entry: ServiceEntry,
    rule: DestinationRule | None,
    trust_domain: str,
    selected: tuple[WorkloadEntry, ...],
) -> Cluster:
    """A ServiceEntry host's cluster (entries.py); subsets select endpoints by label, as for catalog services."""
    policy = traffic_policy(rule, ref.port, ref.subset)
    endpoints = entry_endpoints(entry, ref.host, ref.port, _tls_mode(policy), trust_domain, selected)
    selects = _subset_filter(ref, rule)
    if selects is not None:
        endpoints = [e for e in endpoints if selects(e.labels)]
    return Cluster(
        name=ref.name, host=ref.host, port=ref.port, subset=ref.subset, endpoints=endpoints, traffic_policy=policy
    )


def clusters(
    refs: set[ClusterRef],
    snapshot: Snapshot,
    rules: list[DestinationRule],
    hosts: HostIndex,
    security: MeshSecurity,
    caller: str | None = None,
) -> list[Cluster]:
    """The clusters `refs` name as callers of visibility class `caller` see them."""
    by_name = {ref.name: ref for ref in refs}
    return [cluster(by_name[name], snapshot, rules, hosts, security, caller) for name in sorted(by_name)]
