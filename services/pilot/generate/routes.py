"""Generation of virtual hosts: VirtualService http routes resolved to weighted clusters, per service.

A VirtualService applies to a catalog service when one of its spec.hosts resolves to it, or, for a service
no host names exactly, when its most specific wildcard host covers the service (hosts.py). Its
http routes become Route entries in order; several VirtualServices for one service are concatenated in
(namespace, name) order; the proxy takes the first route that matches. Each destination becomes a
WeightedCluster to `cluster_name(service, port, subset)`, port = destination.port.number, else the
ServiceEntry's HTTP-family port when the host is a ServiceEntry's with exactly one, else 80. Weights:
a lone destination without weight gets 100; when several destinations all omit weight, 100 is split evenly
(remainder to the first ones); when only some omit it, those get 0. Mirror destinations (`mirror` with
`mirrorPercentage`, or `mirrors`) resolve to clusters the same way. Redirect, directResponse and
corsPolicy are passed through as they are. A service no VirtualService
applies to (or whose VirtualServices have no http routes) gets one catch-all Route to its default cluster:
port 80 for a catalog service, the first HTTP-family port for a ServiceEntry host (one without any gets no
virtual host). A route that delegates (`delegate`) is replaced by its delegate VirtualService's routes merged
with it (delegate.py); the delegates a service's VirtualServices name are part of what its virtual host is
reused on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from services.pilot.generate import delegate
from services.pilot.generate.hosts import DEFAULT_PORT, MESH_GATEWAY, HostIndex, MeshService
from services.pilot.reuse import Reuse
from shared.model import VirtualService
from shared.model.proxy_config import MirrorCluster, Route, VirtualHost, WeightedCluster, cluster_name
from shared.model.virtual_service import Destination, HTTPRoute, HTTPRouteDestination, TCPRoute, TLSRoute


@dataclass(frozen=True)
class ClusterRef:
    """One (host, port, subset) a route sends traffic to; host is already resolved (HostIndex.cluster_host)."""

    host: str
    port: int
    subset: str | None

    @property
    def name(self) -> str:
        return cluster_name(self.host, self.port, self.subset)


def default_ref(service: MeshService, port: int = DEFAULT_PORT) -> ClusterRef:
    return ClusterRef(host=service.name, port=port, subset=None)


def virtual_services_for(
    service: MeshService, virtual_services: list[VirtualService], hosts: HostIndex
) -> list[VirtualService]:
    """VirtualServices with a host naming `service`, in (namespace, name) order."""
    return hosts.virtual_services_by_service(virtual_services).get(service.name, [])


def _weights(destinations: list[HTTPRouteDestination]) -> list[int]:
    if all(d.weight is None for d in destinations):
        share, remainder = divmod(100, len(destinations))
        return [share + (1 if index < remainder else 0) for index in range(len(destinations))]
    return [d.weight or 0 for d in destinations]


def _ref(target: Destination, namespace: str, hosts: HostIndex, refs: set[ClusterRef]) -> ClusterRef:
    ref = ClusterRef(
        host=hosts.cluster_host(target.host, namespace),
        port=target.port.number if target.port else hosts.destination_port(target.host, namespace),
        subset=target.subset,
    )
    refs.add(ref)
    return ref


def bound_to(gateway: str, names: list[str], namespace: str) -> bool:
    """Whether a `gateways` list written in `namespace` names `gateway` (`mesh`, or `<namespace>/<name>`): an
    entry without a namespace is a Gateway of the resource's own namespace."""
    return any((name if name == MESH_GATEWAY or "/" in name else f"{namespace}/{name}") == gateway for name in names)


AnyRoute = TypeVar("AnyRoute", HTTPRoute, TCPRoute, TLSRoute)


def for_gateway(route: AnyRoute, gateway: str, namespace: str) -> AnyRoute | None:
    """Istio's match-level `gateways` (on http, tcp and tls routes alike): a block naming gateways applies only
    to those (the others to the VirtualService's). The route keeps the blocks that apply to `gateway` (`mesh`
    for sidecars) and is left out when it had blocks and none apply."""
    blocks: list[Any] = list(route.match)
    if not any(block.gateways for block in blocks):
        return route
    kept = [
        block.model_copy(update={"gateways": []})
        for block in blocks
        if not block.gateways or bound_to(gateway, block.gateways, namespace)
    ]
    return route.model_copy(update={"match": kept}) if kept else None


def route_of(http: HTTPRoute, namespace: str, hosts: HostIndex, refs: set[ClusterRef]) -> Route:
    """One VirtualService http route (of a VirtualService in `namespace`) with its destinations resolved to
    clusters, each added to `refs`."""
    weighted: list[WeightedCluster] = []
    if http.route:
        for destination, weight in zip(http.route, _weights(http.route), strict=True):
            ref = _ref(destination.destination, namespace, hosts, refs)
            weighted.append(WeightedCluster(cluster=ref.name, weight=weight, headers=destination.headers))
    mirrors = [
        MirrorCluster(cluster=_ref(policy.destination, namespace, hosts, refs).name, percentage=policy.percentage)
        for policy in http.mirror_policies()
    ]
    return Route(
        name=http.name,
        match=list(http.match),
        route=weighted,
        timeout=http.timeout,
        retries=http.retries,
        fault=http.fault,
        rewrite=http.rewrite,
        headers=http.headers,
        redirect=http.redirect,
        direct_response=http.direct_response,
        cors_policy=http.cors_policy,
        mirrors=mirrors,
    )


def virtual_host(
    service: MeshService,
    virtual_services: list[VirtualService],
    hosts: HostIndex,
    refs: set[ClusterRef],
    reuse: Reuse | None = None,
    catalog: int = 0,
) -> VirtualHost:
    """The service's virtual host; every cluster its routes reference is added to `refs`. With `reuse`, an
    earlier result is reused while the VirtualServices applying to the service, the delegates they name, its
    default port and (when there are VirtualServices, since their destinations resolve against it) the catalog
    generation `catalog` are unchanged."""
    applying = tuple(virtual_services_for(service, virtual_services, hosts))
    port = hosts.default_port(service) or DEFAULT_PORT
    wanted = delegate.wanted(applying)
    found = delegate.find(wanted, virtual_services)
    delegates = tuple((key, found.get(key)) for key in wanted)

    def build() -> tuple[VirtualHost, frozenset[ClusterRef]]:
        added: set[ClusterRef] = set()
        return _virtual_host(service, port, applying, found, hosts, added), frozenset(added)

    if reuse is None:
        host, added = build()
    else:
        inputs = (applying, delegates, catalog if applying else -1, port)
        host, added = reuse.get(("virtual-host", service), inputs, build)
    refs.update(added)
    return host


def _virtual_host(
    service: MeshService,
    port: int,
    applying: tuple[VirtualService, ...],
    delegates: Mapping[delegate.DelegateKey, VirtualService],
    hosts: HostIndex,
    refs: set[ClusterRef],
) -> VirtualHost:
    routes = [
        route_of(kept, vs.metadata.namespace, hosts, refs)
        for vs in applying
        for http in delegate.expand(vs, delegates)
        if (kept := for_gateway(http, MESH_GATEWAY, vs.metadata.namespace)) is not None
    ]
    if not routes:
        ref = default_ref(service, port)
        refs.add(ref)
        routes = [Route(name="default", route=[WeightedCluster(cluster=ref.name, weight=100)])]
    return VirtualHost(name=service.name, domains=service.domains, routes=routes)
