"""The Sidecar resource's egress hosts in generation: which Sidecar applies to a proxy, and which services it selects.

Which Sidecar applies (Istio's sidecar scope): in the proxy's namespace, the first Sidecar in name order whose
`workloadSelector` labels all match the proxy's labels (Istio takes the oldest; galley's ISM0015 reports
several); else the first without selector in the proxy's namespace (ISM0014 reports several); else the first
without selector in the root namespace. As with PeerAuthentication (inbound.py), a Sidecar in the root
namespace that has a selector is read like any other namespace's: it applies only to the root namespace's
own workloads that it selects, never mesh-wide.

What it selects: each egress host `namespace/dnsName` selects the services (catalog services and ServiceEntry
hosts, hosts.MeshService) whose namespace matches (`*` any, `.` the proxy's namespace, which for a
root-namespace Sidecar is the namespace it is applied in, as in Istio; `~` none; else that name) and one of
whose domains matches the dnsName (`*` any, `*.suffix` a domain ending in `.suffix`, else equal). Selections
are memoized per snapshot, Sidecar, visibility class and the proxy's namespace when the hosts use `.`; they
read lookups into the class's services (by namespace, by domain), so no proxy scans the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.pilot.generate.hosts import MeshService
from services.pilot.snapshot import Proxy, Snapshot
from shared.model import Sidecar
from shared.model.sidecar import ANY_NAMESPACE, NO_NAMESPACE, OWN_NAMESPACE


@dataclass(frozen=True)
class SidecarScope:
    """The egress hosts of the Sidecar applying to a proxy, read for that proxy."""

    key: tuple[str, str, str | None]
    """(Sidecar namespace, Sidecar name, the proxy's namespace when a host says `.`): the memo key part."""
    hosts: tuple[tuple[str, str], ...]
    """(namespace, dnsName) with `.` already read as the proxy's namespace."""


def _selects(sidecar: Sidecar, labels: Mapping[str, str]) -> bool:
    selector = sidecar.spec.workload_selector
    return selector is not None and all(labels.get(key) == value for key, value in selector.labels.items())


def applying_sidecar(snapshot: Snapshot, proxy: Proxy, root_namespace: str) -> Sidecar | None:
    """The Sidecar that applies to the proxy, or None (then nothing limits its egress hosts)."""
    own = snapshot.in_namespaces(Sidecar, proxy.namespace)
    chosen = next((sidecar for sidecar in own if _selects(sidecar, proxy.labels)), None)
    if chosen is None:
        chosen = next((sidecar for sidecar in own if sidecar.spec.workload_selector is None), None)
    if chosen is None and proxy.namespace != root_namespace:
        root = snapshot.in_namespaces(Sidecar, root_namespace)
        chosen = next((sidecar for sidecar in root if sidecar.spec.workload_selector is None), None)
    return chosen


def sidecar_scope(snapshot: Snapshot, proxy: Proxy, root_namespace: str) -> SidecarScope | None:
    """The applying Sidecar's egress hosts for this proxy; None without a Sidecar or when it has no egress."""
    sidecar = applying_sidecar(snapshot, proxy, root_namespace)
    if sidecar is None or sidecar.spec.egress_hosts is None:
        return None
    hosts: list[tuple[str, str]] = []
    own = False
    for host in sidecar.spec.egress_hosts:
        namespace, _, dns_name = host.partition("/")
        if namespace == OWN_NAMESPACE:
            own, namespace = True, proxy.namespace
        hosts.append((namespace, dns_name))
    key = (sidecar.metadata.namespace, sidecar.metadata.name, proxy.namespace if own else None)
    return SidecarScope(key=key, hosts=tuple(hosts))


@dataclass(frozen=True)
class ServiceLookup:
    """One visibility class's services by namespace and by domain (built once per snapshot and class)."""

    by_namespace: Mapping[str, tuple[MeshService, ...]]
    by_domain: Mapping[str, MeshService]
    services: tuple[MeshService, ...]

    @classmethod
    def of(cls, services: Sequence[MeshService]) -> ServiceLookup:
        by_namespace: dict[str, list[MeshService]] = {}
        by_domain: dict[str, MeshService] = {}
        for service in services:
            by_namespace.setdefault(service.namespace, []).append(service)
            for domain in service.domains:
                by_domain.setdefault(domain, service)
        return cls({ns: tuple(found) for ns, found in by_namespace.items()}, by_domain, tuple(services))


def _matches(service: MeshService, namespace: str, dns_name: str) -> bool:
    if namespace != ANY_NAMESPACE and service.namespace != namespace:
        return False
    if dns_name == "*":
        return True
    if dns_name.startswith("*."):
        return any(domain.endswith(dns_name[1:]) for domain in service.domains)
    return dns_name in service.domains


def selected(lookup: ServiceLookup, scope: SidecarScope) -> frozenset[str]:
    """Names of the services some egress host of the scope selects."""
    names: set[str] = set()
    for namespace, dns_name in scope.hosts:
        if namespace == NO_NAMESPACE:
            continue
        if "*" not in dns_name:
            service = lookup.by_domain.get(dns_name)
            candidates: Sequence[MeshService] = () if service is None else (service,)
        elif namespace == ANY_NAMESPACE:
            candidates = lookup.services
        else:
            candidates = lookup.by_namespace.get(namespace, ())
        names.update(service.name for service in candidates if _matches(service, namespace, dns_name))
    return frozenset(names)
