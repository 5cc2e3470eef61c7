"""Host names in generation: the domains of each service and how a resource's host resolves to one.

A catalog service `name` in namespace `ns` (the Meta `namespace` most of its instances declare, default
"default") answers to
`name`, `name.ns`, `name.ns.svc`, `name.ns.svc.cluster.local` and `name.service.consul`, all lower case and
without port. A host written in a VirtualService or DestinationRule without a dot is a short name, read in
that resource's namespace (`reviews` in namespace `shop` means `reviews.shop`).

Each host of a ServiceEntry is a service too, named by the host, whose only domain is the host itself; it
comes after the catalog's services. A host that is already a catalog service's domain stays the catalog's
(logged), and a host several ServiceEntries declare belongs to the first in (namespace, name) order.

Visibility (`exportTo`, shared/model/export_to.py): a caller sees the VirtualServices, DestinationRules and
ServiceEntries exported to its namespace (`View`); the others do not exist for its config. Callers fall into
visibility classes: one per namespace some restricting `exportTo` names (its own namespace for `.`), and one
(None) for every other namespace, which sees only the resources that restrict nothing. With no restricting
resource every caller is in class None and sees everything, exactly as before `exportTo` was read. A delegate
VirtualService (no hosts) is in every view and names no class: Istio judges its `exportTo` against its root's
namespace (delegate.py), not the caller's.

Which DestinationRule applies (`rule_by_host`), as Istio's `PushContext.destinationRule` (pilot/pkg/model/
push_context.go; its `destinationRuleIndex` keeps `namespaceLocal`, `exportedByNamespace` and `rootNamespaceLocal`
for exactly this path; istio.io "Cross-namespace configuration sharing"): among the rules the caller sees, the one
in the caller's namespace, else the one in the service's namespace (a catalog service's `MeshService.namespace`, a
ServiceEntry's own namespace; a host no service holds has none), else the one in the root namespace; a rule in any
other namespace never applies. Several rules the caller sees for one host in one namespace are merged as Istio
merges them, in name order (`DestinationRule.merged_with`). Callers then differ by namespace only where a host's
rules are not all in one namespace that is the service's own or the root: a namespace holding a rule for such a host
(other than the service's namespace, whose callers find that rule second anyway) is a visibility class of its own
too. When every host's rules sit in its service's or the root namespace, no class is added.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from services.pilot.snapshot import Snapshot
from shared.consul import DEFAULT_NAMESPACE
from shared.model import DestinationRule, Resource, ServiceEntry, VirtualService
from shared.model.export_to import audience, restricts, visible_to

log = logging.getLogger(__name__)

R = TypeVar("R", VirtualService, DestinationRule, ServiceEntry)

CONSUL_OWN_SERVICE = "consul"
DEFAULT_PORT = 80
"""The port of a catalog service's HTTP clusters, and of a destination that names none."""


def service_domains(name: str, namespace: str) -> list[str]:
    name, namespace = name.lower(), namespace.lower()
    return [
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.cluster.local",
        f"{name}.service.consul",
    ]


def qualify(host: str, namespace: str) -> str:
    """A resource's host as a comparable domain: lower case, short names qualified with the namespace."""
    host = host.lower()
    return host if "." in host else f"{host}.{namespace.lower()}"


@dataclass(frozen=True)
class MeshService:
    name: str
    namespace: str
    entry: bool = False
    """Declared by a ServiceEntry (in `namespace`): `name` is its host and its only domain."""

    @property
    def domains(self) -> list[str]:
        return [self.name] if self.entry else service_domains(self.name, self.namespace)


def _namespace_of(namespaces: list[str]) -> str:
    """A service's namespace: the one most of its instances declare (ties: the first by name)."""
    if not namespaces:
        return DEFAULT_NAMESPACE
    return min(set(namespaces), key=lambda ns: (-namespaces.count(ns), ns))


class HostIndex:
    """Catalog and ServiceEntry services and the domain -> service map used to resolve resource hosts."""

    def __init__(self, snapshot: Snapshot, entries: list[ServiceEntry] | None = None) -> None:
        """`entries`: the ServiceEntries the callers see (View.entries); default every one in the snapshot."""
        self.services: list[MeshService] = []
        self._by_domain: dict[str, MeshService] = {}
        self._entries: dict[str, ServiceEntry] = {}
        self._virtual_services: tuple[Sequence[VirtualService], dict[str, list[VirtualService]]] | None = None
        self._rules: tuple[Sequence[DestinationRule], tuple[str | None, str], RuleChoice] | None = None
        for name, instances in snapshot.services.items():
            if name == CONSUL_OWN_SERVICE:
                continue
            service = MeshService(name=name, namespace=_namespace_of([i.namespace for i in instances]))
            self.services.append(service)
            for domain in service.domains:
                self._by_domain.setdefault(domain, service)
        self._add_entries(snapshot.of_kind(ServiceEntry) if entries is None else entries)

    def _add_entries(self, entries: list[ServiceEntry]) -> None:
        added: list[MeshService] = []
        for entry in entries:
            for host in entry.spec.hosts:
                if host in self._entries:
                    continue  # a second ServiceEntry for the host: galley's analysis reports it
                if host in self._by_domain:
                    log.warning(
                        "ServiceEntry %s/%s: host %s is a domain of catalog service %s, which keeps it",
                        entry.metadata.namespace,
                        entry.metadata.name,
                        host,
                        self._by_domain[host].name,
                    )
                    continue
                service = MeshService(name=host, namespace=entry.metadata.namespace, entry=True)
                self._entries[host] = entry
                self._by_domain[host] = service
                added.append(service)
        self.services.extend(sorted(added, key=lambda service: service.name))

    def by_name(self, name: str) -> MeshService | None:
        return self._by_domain.get(name.lower())

    def entry(self, service: MeshService) -> ServiceEntry | None:
        """The ServiceEntry declaring `service`; None for a catalog service."""
        return self._entries.get(service.name) if service.entry else None

    def default_port(self, service: MeshService) -> int | None:
        """The port of the service's catch-all HTTP route: 80 for a catalog service, a ServiceEntry's first
        HTTP-family port; None for a ServiceEntry without one (it gets no virtual host)."""
        entry = self.entry(service)
        if entry is None:
            return DEFAULT_PORT
        ports = entry.spec.http_ports
        return ports[0].number if ports else None

    def destination_port(self, host: str, namespace: str) -> int:
        """The port of a route destination that names none: a ServiceEntry's HTTP-family port when it has
        exactly one, else 80."""
        service = self.resolve(host, namespace)
        entry = self.entry(service) if service is not None else None
        ports = entry.spec.http_ports if entry is not None else []
        return ports[0].number if len(ports) == 1 else DEFAULT_PORT

    def resolution_key(self) -> tuple[Any, ...]:
        """Compares equal while every host resolves as before: same services, same destination ports."""
        ports = tuple(
            (host, tuple(port.number for port in entry.spec.http_ports)) for host, entry in self._entries.items()
        )
        return (tuple(self.services), ports)

    def resolve(self, host: str, namespace: str) -> MeshService | None:
        """The service (catalog or ServiceEntry) a resource host (written in `namespace`) names, or None."""
        return self._by_domain.get(qualify(host, namespace))

    def cluster_host(self, host: str, namespace: str) -> str:
        """The host used in cluster names: the catalog service name, or the qualified host if unknown."""
        service = self.resolve(host, namespace)
        return service.name if service else qualify(host, namespace)

    def virtual_services_by_service(
        self, virtual_services: Sequence[VirtualService]
    ) -> dict[str, list[VirtualService]]:
        """Catalog service name -> the VirtualServices with a host naming it, in (namespace, name) order; a
        service no host names exactly takes those of its most specific wildcard host (`*.shop.svc.cluster.local`).

        Built once per list (generation passes the same list for every service), so finding a service's
        VirtualServices costs a lookup, not a scan of every VirtualService's hosts."""
        if self._virtual_services is None or self._virtual_services[0] is not virtual_services:
            ordered = sorted(virtual_services, key=lambda vs: (vs.metadata.namespace, vs.metadata.name))
            index: dict[str, list[VirtualService]] = {}
            for vs in ordered:
                named = {self.resolve(host, vs.metadata.namespace) for host in vs.spec.hosts if "*" not in host}
                for service in sorted((s for s in named if s is not None), key=lambda s: s.name):
                    index.setdefault(service.name, []).append(vs)
            wildcards = [
                (suffixes, vs)
                for vs in ordered
                if (suffixes := [host.lower()[1:] for host in vs.spec.hosts if host.startswith("*")])
            ]
            if wildcards:  # usually none: then no service is scanned
                for service in self.services:
                    if service.name not in index:
                        found = _most_specific(service, wildcards)
                        if found:
                            index[service.name] = found
            self._virtual_services = (virtual_services, index)
        return self._virtual_services[1]

    def rule_by_host(self, rules: Sequence[DestinationRule], caller: str | None, root_namespace: str) -> RuleChoice:
        """Cluster host (cluster_host of the rule's host) -> the DestinationRule callers in namespace `caller`
        (None: a namespace holding no rule that matters, see `overriding_namespaces`) use, among `rules` (the
        ones they see): their own namespace's, the service's namespace's, then the root namespace's, several
        within one merged. Built once per list, like virtual_services_by_service."""
        if self._rules is None or self._rules[0] is not rules or self._rules[1] != (caller, root_namespace):
            grouped, own = self._rules_by_namespace(rules)
            chosen: dict[str, DestinationRule] = {}
            dependent: set[str] = set()
            for host, by_namespace in grouped.items():
                rule = next(
                    (by_namespace[ns] for ns in (caller, own[host], root_namespace) if ns in by_namespace), None
                )
                if rule is not None:
                    chosen[host] = rule
                if not _plain(set(by_namespace), own[host], root_namespace):
                    dependent.add(host)
            self._rules = (rules, (caller, root_namespace), RuleChoice(chosen, frozenset(dependent)))
        return self._rules[2]

    def _rules_by_namespace(
        self, rules: Sequence[DestinationRule]
    ) -> tuple[dict[str, dict[str, DestinationRule]], dict[str, str | None]]:
        """Cluster host -> namespace -> its rules there merged in name order (DestinationRule.merged_with); and
        each host's service namespace."""
        grouped: dict[str, dict[str, DestinationRule]] = {}
        own: dict[str, str | None] = {}
        for rule in sorted(rules, key=lambda dr: (dr.metadata.namespace, dr.metadata.name)):
            namespace = rule.metadata.namespace
            service = self.resolve(rule.spec.host, namespace)
            host = service.name if service else qualify(rule.spec.host, namespace)
            own[host] = service.namespace if service else None
            by_namespace = grouped.setdefault(host, {})
            first = by_namespace.get(namespace)
            by_namespace[namespace] = rule if first is None else first.merged_with(rule)
        return grouped, own


@dataclass(frozen=True)
class RuleChoice:
    """The DestinationRule each cluster host gets in one visibility class."""

    by_host: dict[str, DestinationRule]
    caller_dependent: frozenset[str]
    """Hosts whose rules are not all in one namespace that is the service's own or the root namespace, so the
    rule chosen depends on the caller's namespace (clusters.py keeps their clusters in per-rule reuse slots)."""

    def get(self, host: str) -> DestinationRule | None:
        return self.by_host.get(host)


def _plain(namespaces: set[str], own: str | None, root_namespace: str) -> bool:
    """Whether a host's rules (in `namespaces`) apply alike to every caller: all in the service's namespace, or
    all in the root namespace."""
    return namespaces <= {own} or namespaces == {root_namespace}


def _most_specific(service: MeshService, wildcards: list[tuple[list[str], VirtualService]]) -> list[VirtualService]:
    """The VirtualServices whose most specific wildcard host (`*` or `*.suffix`, against the service's domains)
    covers `service`: the longest suffix wins, as in Istio; ties keep (namespace, name) order."""
    domains = service.domains
    best: tuple[int, list[VirtualService]] = (-1, [])
    for suffixes, vs in wildcards:
        lengths = [len(suffix) for suffix in suffixes if any(domain.endswith(suffix) for domain in domains)]
        if not lengths:
            continue
        length = max(lengths)
        if length > best[0]:
            best = (length, [vs])
        elif length == best[0]:
            best[1].append(vs)
    return best[1]


def restricting(resource: Resource) -> bool:
    """Whether the resource (a VirtualService, DestinationRule or ServiceEntry) is hidden from some callers'
    namespace. A delegate VirtualService (no hosts) never is: no caller reaches it but through its root, and
    Istio judges its `exportTo` against the root's namespace, not the caller's."""
    if isinstance(resource, VirtualService) and not resource.spec.hosts:
        return False
    return isinstance(resource, VirtualService | DestinationRule | ServiceEntry) and restricts(resource.spec.export_to)


def _named_namespaces(snapshot: Snapshot) -> frozenset[str]:
    exported: list[VirtualService | DestinationRule | ServiceEntry] = [
        *snapshot.of_kind(VirtualService),
        *snapshot.of_kind(DestinationRule),
        *snapshot.of_kind(ServiceEntry),
    ]
    named: set[str] = set()
    for resource in exported:
        if restricting(resource):
            named |= audience(resource.spec.export_to, resource.metadata.namespace)
    return frozenset(named)


def overriding_namespaces(snapshot: Snapshot, root_namespace: str) -> frozenset[str]:
    """Namespaces whose callers pick a different DestinationRule than callers elsewhere may: each holds a rule
    (that its own callers see) for a host whose rules are not `_plain`, and is neither that host's service
    namespace nor the root namespace of a host without a rule in its service namespace. Services resolve as
    class None sees them (only the ServiceEntries that restrict nothing): every other class is its own anyway."""
    rules = [
        rule
        for rule in snapshot.of_kind(DestinationRule)
        if visible_to(rule.spec.export_to, rule.metadata.namespace, rule.metadata.namespace)
    ]
    if not rules:
        return frozenset()
    grouped, own = HostIndex(snapshot, _seen(snapshot, ServiceEntry, None))._rules_by_namespace(rules)
    named: set[str] = set()
    for host, by_namespace in grouped.items():
        namespaces = set(by_namespace)
        if _plain(namespaces, own[host], root_namespace):
            continue
        named |= namespaces - {own[host]} - ({root_namespace} if own[host] not in namespaces else set())
    return frozenset(named)


def visibility_class(snapshot: Snapshot, namespace: str, root_namespace: str) -> str | None:
    """The visibility class of callers in `namespace`: the namespace itself when some restricting resource is
    exported to it or it holds a DestinationRule that only its callers use (`overriding_namespaces`), else None,
    the class of every other namespace (which sees only the resources that restrict nothing: all of them when
    none restricts)."""
    named = snapshot.memoized(
        ("class-namespaces", root_namespace),
        lambda: _named_namespaces(snapshot) | overriding_namespaces(snapshot, root_namespace),
    )
    return namespace if namespace in named else None


@dataclass(frozen=True)
class View:
    """The VirtualServices, DestinationRules and ServiceEntries one visibility class sees, in (namespace, name)
    order. With nothing restricted these are the snapshot's own lists (so indexes keyed on them are shared)."""

    virtual_services: list[VirtualService]
    rules: list[DestinationRule]
    entries: list[ServiceEntry]


def _seen(snapshot: Snapshot, kind: type[R], visibility: str | None) -> list[R]:
    everything = snapshot.of_kind(kind)
    if not any(restricting(resource) for resource in everything):
        return everything
    if visibility is None:
        return [resource for resource in everything if not restricting(resource)]
    return [
        r for r in everything if not restricting(r) or visible_to(r.spec.export_to, r.metadata.namespace, visibility)
    ]


MESH_GATEWAY = "mesh"
"""Istio's reserved gateway name: every sidecar."""


def applies_to_sidecars(virtual_service: VirtualService) -> bool:
    """Istio's `gateways`: empty means the mesh; otherwise the VirtualService shapes sidecars' traffic only when
    the list names `mesh` (gateway names alone bind it to those gateways only: generate/gateway.py)."""
    gateways = virtual_service.spec.gateways
    return not gateways or MESH_GATEWAY in gateways


def _for_sidecars(virtual_services: list[VirtualService]) -> list[VirtualService]:
    if all(applies_to_sidecars(vs) for vs in virtual_services):
        return virtual_services  # the same list, so indexes keyed on it stay shared
    return [vs for vs in virtual_services if applies_to_sidecars(vs)]


def view(snapshot: Snapshot, visibility: str | None) -> View:
    """What callers of the visibility class see (memoized per snapshot and class); VirtualServices bound to
    gateways only (`gateways` without `mesh`) are left out (gateway proxies see them: `gateway_view`)."""
    return snapshot.memoized(
        ("view", visibility),
        lambda: View(
            virtual_services=_for_sidecars(_seen(snapshot, VirtualService, visibility)),
            rules=_seen(snapshot, DestinationRule, visibility),
            entries=_seen(snapshot, ServiceEntry, visibility),
        ),
    )


@dataclass(frozen=True)
class GatewayView(View):
    """What a gateway proxy in a namespace sees: its class's resources, VirtualServices bound to gateways only
    included."""

    visibility: str | None = None


def gateway_view(snapshot: Snapshot, namespace: str, root_namespace: str) -> GatewayView:
    visibility = visibility_class(snapshot, namespace, root_namespace)
    return snapshot.memoized(
        ("gateway-view", visibility),
        lambda: GatewayView(
            virtual_services=_seen(snapshot, VirtualService, visibility),
            rules=_seen(snapshot, DestinationRule, visibility),
            entries=_seen(snapshot, ServiceEntry, visibility),
            visibility=visibility,
        ),
    )
