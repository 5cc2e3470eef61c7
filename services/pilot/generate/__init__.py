"""Pure per-proxy generation: (snapshot, proxy) -> ProxyConfig, with no I/O; push.py calls it for every proxy.

Routes (routes.py), TCP listeners (tcp.py), clusters (clusters.py) and inbound policy (inbound.py) each
state their part of the mesh contract. The outbound part (virtual hosts, TCP listeners and clusters) is
computed once per snapshot, then scoped per proxy (TCP listeners: see tcp.py): a proxy that declares its
upstreams (Meta `isthmus-upstreams`, sidecar flag `--upstream`) gets
only the virtual hosts of those services (an upstream may be written as any of a service's domains) and
the clusters their routes use, the way Istio's Sidecar resource limits egress hosts; a proxy that declares
none gets every service. ServiceEntry hosts are services like the others (hosts.py): declared by their host
name, or all of them when a proxy declares nothing. An upstream the catalog does not hold yet is simply
absent until it appears.
The Sidecar resource (sidecar_scope.py) limits a proxy's outbound part the same way: the applying Sidecar's
egress hosts select the virtual hosts (with the clusters their routes use) and the TCP listeners it gets. A proxy
with both a Sidecar and declared upstreams gets the intersection: a service must be named by an upstream and
selected by an egress host.
Scoped results are memoized per upstream set and Sidecar (with no Sidecar, under the keys they had before).
The output is deterministic: the same snapshot gives byte-identical ProxyConfig JSON.

`exportTo` (hosts.py, visibility classes): the outbound part is computed once per snapshot and visibility
class, from the resources the class sees; a proxy takes its namespace's class. A class other than None keeps
its virtual hosts in a reuse store of its own (`class_reuse`), since what a route resolves to depends on the
ServiceEntries it sees; clusters share the snapshot's store (clusters.py). With no restricting resource there
is one class, None, with the same memo keys, reuse slots and output as without `exportTo`.
A namespace holding a DestinationRule that only its own callers use is a class too (hosts.py, which
DestinationRule applies); the class's namespace is the caller's namespace of Istio's lookup path, None standing
for any namespace that holds no such rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from services.pilot.generate.clusters import MeshSecurity, clusters
from services.pilot.generate.gateway import gateway_servers
from services.pilot.generate.hosts import HostIndex, MeshService, view, visibility_class
from services.pilot.generate.inbound import inbound
from services.pilot.generate.routes import ClusterRef, default_ref, virtual_host
from services.pilot.generate.sidecar_scope import ServiceLookup, SidecarScope, selected, sidecar_scope
from services.pilot.generate.tcp import proxy_listeners, tcp_listeners, with_listener_clusters
from services.pilot.reuse import Reuse
from services.pilot.snapshot import Proxy, Snapshot
from shared.model import PeerAuthentication
from shared.model.proxy_config import Cluster, ProxyConfig, Route, TcpListener, VirtualHost
from shared.model.virtual_service import names_source, source_meets


@dataclass(frozen=True)
class Outbound:
    virtual_hosts: tuple[VirtualHost, ...]
    clusters: tuple[Cluster, ...]
    tcp_listeners: tuple[TcpListener, ...] = ()
    """Every declared TCP upstream's listener (tcp.py); only in the unscoped part."""
    services: tuple[MeshService, ...] = ()
    """Every service the class sees, with or without a virtual host; only in the unscoped part."""


Visibility = str | None
"""A visibility class (hosts.visibility_class): a namespace some `exportTo` names, or None for all others."""


def _key(base: tuple[Any, ...], visibility: Visibility) -> tuple[Any, ...]:
    """A memo or reuse key of class `visibility`: class None keeps the key it had before `exportTo` was read."""
    return base if visibility is None else (*base, visibility)


def class_reuse(snapshot: Snapshot, visibility: Visibility) -> Reuse:
    """The reuse store of a class's virtual hosts: the snapshot's for None, else one of the class's own kept in
    it (a slot's inputs then never compare against another class's catalog generation)."""
    if visibility is None:
        return snapshot.reuse
    return snapshot.reuse.get(("visibility-class", visibility), (), Reuse)


def _outbound(snapshot: Snapshot, trust_domain: str, root_namespace: str, visibility: Visibility) -> Outbound:
    seen = view(snapshot, visibility)
    reuse = class_reuse(snapshot, visibility)
    hosts = HostIndex(snapshot, seen.entries)
    virtual_services = seen.virtual_services
    routed = [(service, port) for service in hosts.services if (port := hosts.default_port(service)) is not None]
    refs: set[ClusterRef] = {default_ref(service, port) for service, port in routed}
    catalog = reuse.generation(("catalog", trust_domain, root_namespace), hosts.resolution_key())
    virtual_hosts = [virtual_host(service, virtual_services, hosts, refs, reuse, catalog) for service, _ in routed]
    listeners = tcp_listeners(snapshot, hosts, virtual_services, refs)
    security = MeshSecurity(trust_domain, root_namespace, tuple(snapshot.of_kind(PeerAuthentication)))
    generated = clusters(refs, snapshot, seen.rules, hosts, security, visibility)
    return Outbound(
        virtual_hosts=tuple(virtual_hosts),
        clusters=tuple(generated),
        tcp_listeners=tuple(listeners),
        services=tuple(hosts.services),
    )


def outbound(snapshot: Snapshot, trust_domain: str, root_namespace: str, visibility: Visibility = None) -> Outbound:
    """Virtual hosts for every catalog service and ServiceEntry host with an HTTP port the class sees, and the
    clusters their routes use."""
    return snapshot.memoized(
        _key(("outbound", trust_domain, root_namespace), visibility),
        lambda: _outbound(snapshot, trust_domain, root_namespace, visibility),
    )


def _cluster_refs(value: Any) -> Iterator[str]:
    """Every `cluster` named anywhere in a route (weighted destinations, and any other reference it grows)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "cluster" and isinstance(item, str):
                yield item
            else:
                yield from _cluster_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _cluster_refs(item)


def _host_clusters(host: VirtualHost) -> frozenset[str]:
    return frozenset(name for route in host.routes for name in _cluster_refs(route.model_dump()))


@dataclass(frozen=True)
class _OutboundIndex:
    """Lookups into one snapshot's full outbound part, so scoping a proxy costs its upstreams, not the catalog."""

    host_by_domain: dict[str, int]
    """Any domain (or lower-case name) of a virtual host -> its position in Outbound.virtual_hosts."""
    host_clusters: tuple[frozenset[str], ...]
    """Per virtual host (same positions): every cluster its routes name."""
    cluster_position: dict[str, int]
    host_position: dict[str, int]
    """Virtual host name (its service's name) -> its position."""
    services: ServiceLookup


def _index(snapshot: Snapshot, trust_domain: str, root_namespace: str, visibility: Visibility) -> _OutboundIndex:
    def build() -> _OutboundIndex:
        everything = outbound(snapshot, trust_domain, root_namespace, visibility)
        reuse = class_reuse(snapshot, visibility)
        by_domain: dict[str, int] = {}
        for position, host in enumerate(everything.virtual_hosts):
            for domain in (host.name.lower(), *host.domains):
                by_domain.setdefault(domain, position)
        refs = tuple(
            reuse.get(("host-clusters", host.name), (host,), partial(_host_clusters, host))
            for host in everything.virtual_hosts
        )
        positions = {cluster.name: position for position, cluster in enumerate(everything.clusters)}
        names = {host.name: position for position, host in enumerate(everything.virtual_hosts)}
        return _OutboundIndex(by_domain, refs, positions, names, ServiceLookup.of(everything.services))

    return snapshot.memoized(_key(("outbound-index", trust_domain, root_namespace), visibility), build)


def sidecar_selection(
    snapshot: Snapshot, trust_domain: str, root_namespace: str, scope: SidecarScope, visibility: Visibility = None
) -> frozenset[str]:
    """Names of the services (of the class's view) the Sidecar's egress hosts select, memoized per Sidecar."""
    return snapshot.memoized(
        _key(("sidecar-selection", trust_domain, root_namespace, scope.key), visibility),
        lambda: selected(_index(snapshot, trust_domain, root_namespace, visibility).services, scope),
    )


def _scoped(
    snapshot: Snapshot,
    trust_domain: str,
    root_namespace: str,
    upstreams: tuple[str, ...],
    visibility: Visibility,
    scope: SidecarScope | None,
) -> Outbound:
    everything = outbound(snapshot, trust_domain, root_namespace, visibility)
    index = _index(snapshot, trust_domain, root_namespace, visibility)
    if scope is None:
        chosen = {index.host_by_domain[name] for name in upstreams if name in index.host_by_domain}
    else:
        allowed = sidecar_selection(snapshot, trust_domain, root_namespace, scope, visibility)
        chosen = {index.host_position[name] for name in allowed if name in index.host_position}
        if upstreams:
            chosen &= {index.host_by_domain[name] for name in upstreams if name in index.host_by_domain}
    picked = sorted(chosen)
    used = {name for position in picked for name in index.host_clusters[position]}
    clusters = sorted(index.cluster_position[name] for name in used if name in index.cluster_position)
    return Outbound(
        virtual_hosts=tuple(everything.virtual_hosts[position] for position in picked),
        clusters=tuple(everything.clusters[position] for position in clusters),
    )


def scoped_outbound(
    snapshot: Snapshot,
    trust_domain: str,
    root_namespace: str,
    upstreams: tuple[str, ...],
    visibility: Visibility = None,
    scope: SidecarScope | None = None,
) -> Outbound:
    """The outbound part a proxy of the visibility class with these declared upstreams and this Sidecar scope
    needs: all of it when it has neither, the intersection of both when it has both."""
    if not upstreams and scope is None:
        return outbound(snapshot, trust_domain, root_namespace, visibility)
    return snapshot.memoized(
        _key(_scoped_base(("scoped", trust_domain, root_namespace, upstreams), scope), visibility),
        lambda: _scoped(snapshot, trust_domain, root_namespace, upstreams, visibility, scope),
    )


def _scoped_base(base: tuple[Any, ...], scope: SidecarScope | None) -> tuple[Any, ...]:
    """A memo key of a scoped result: without a Sidecar the key it had before Sidecars were read."""
    return base if scope is None else (*base, ("sidecar", scope.key))


def _route_for_source(route: Route, labels: Mapping[str, str], namespace: str) -> Route | None:
    """Istio's `sourceLabels` and `sourceNamespace`: a match block naming them applies only to callers that
    meet them. The route keeps the blocks this caller can meet and disappears when it had blocks and none are
    left."""
    if not any(names_source(block) for block in route.match):
        return route
    kept = [block for block in route.match if source_meets(block, labels, namespace)]
    if not kept:
        return None
    return route.model_copy(update={"match": kept})


def _names_sources(hosts: tuple[VirtualHost, ...]) -> bool:
    return any(names_source(block) for host in hosts for route in host.routes for block in route.match)


def for_source(hosts: tuple[VirtualHost, ...], labels: Mapping[str, str], namespace: str) -> tuple[VirtualHost, ...]:
    """The virtual hosts as this caller sees them once `sourceLabels` and `sourceNamespace` are applied."""
    result = []
    for host in hosts:
        routes = [kept for route in host.routes if (kept := _route_for_source(route, labels, namespace)) is not None]
        result.append(
            host
            if len(routes) == len(host.routes) and routes == host.routes
            else host.model_copy(update={"routes": routes})
        )
    return tuple(result)


def generate(snapshot: Snapshot, proxy: Proxy, trust_domain: str, root_namespace: str) -> ProxyConfig:
    """The proxy's config (unversioned; call .versioned() before publishing it)."""
    if proxy.gateway:
        servers, used = gateway_servers(snapshot, proxy, trust_domain, root_namespace)
        return ProxyConfig(
            proxy_id=proxy.proxy_id,
            service=proxy.service,
            namespace=proxy.namespace,
            clusters=used,
            inbound=inbound(snapshot, proxy, root_namespace),
            gateway_servers=servers,
        )
    visibility = visibility_class(snapshot, proxy.namespace, root_namespace)
    scope = sidecar_scope(snapshot, proxy, root_namespace)
    shared = scoped_outbound(snapshot, trust_domain, root_namespace, proxy.upstreams, visibility, scope)
    virtual_hosts = shared.virtual_hosts
    labelled = _key(_scoped_base(("source-labels", trust_domain, proxy.upstreams), scope), visibility)
    if snapshot.memoized(labelled, lambda: _names_sources(virtual_hosts)):
        virtual_hosts = for_source(virtual_hosts, proxy.labels, proxy.namespace)
    everything = outbound(snapshot, trust_domain, root_namespace, visibility)
    listeners = proxy_listeners(snapshot, proxy, everything.tcp_listeners)
    if scope is not None and listeners:
        allowed = sidecar_selection(snapshot, trust_domain, root_namespace, scope, visibility)
        listeners = [listener for listener in listeners if listener.service in allowed]
    return ProxyConfig(
        proxy_id=proxy.proxy_id,
        service=proxy.service,
        namespace=proxy.namespace,
        virtual_hosts=list(virtual_hosts),
        tcp_listeners=listeners,
        clusters=with_listener_clusters(shared.clusters, listeners, everything.clusters),
        inbound=inbound(snapshot, proxy, root_namespace),
    )


__all__ = [
    "Outbound",
    "Visibility",
    "class_reuse",
    "for_source",
    "generate",
    "outbound",
    "scoped_outbound",
    "sidecar_selection",
]
