"""Generation of TCP listeners: the routes of every `name:port` upstream a proxy declares on a TCP service.

A catalog service's port P is TCP when, for most of its instances, the port serving P (snapshot.Instance.
serving: the registered port with Meta `isthmus-protocol`, or the extra port of app port P in Meta
`isthmus-extra-ports`) declares tcp (a tie or no declaration: http); for single-port instances that is
"most instances declare `isthmus-protocol: tcp`", whatever P. A proxy declares a TCP upstream as
`name:port[:localport]` in Meta `isthmus-upstreams` (shared/consul.py); `name` may be any of the service's
domains. Listeners are computed once per snapshot for
every (name, port) some proxy declares, and each proxy takes its own.

A listener's routes are the `tcp` routes of the VirtualServices applying to the service (routes.py's
`virtual_services_for`), in order, each keeping the match blocks whose `port` is unset or the listener's
port; a route whose blocks all name other ports is left out. A destination's port defaults to the listener's
port; weights follow the http rules (a lone destination 100, all omitted: 100 split evenly, some omitted: 0).
Without an applying tcp route the listener gets one catch-all route to `outbound|<port>||<service>`.
`sourceLabels` and `sourceNamespace` are applied per proxy as for http routes: blocks the caller cannot meet
are dropped, and a route left without blocks disappears (a listener left without routes refuses
connections). An upstream that is not a TCP port of a catalog service gets no listener.

A ServiceEntry host's port is TCP when its protocol is not of the HTTP family (TCP, TLS, HTTPS, MONGO, MYSQL,
REDIS): `api.example.com:443` declared as an upstream gets a listener whose bytes (the app's own TLS, for
HTTPS and TLS ports) go to the ServiceEntry's endpoints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from services.pilot.generate.hosts import MESH_GATEWAY, HostIndex, MeshService
from services.pilot.generate.routes import ClusterRef, for_gateway, virtual_services_for
from services.pilot.snapshot import Proxy, Snapshot
from shared.consul import META_UPSTREAMS, PROTOCOL_TCP, TcpUpstream, parse_tcp_upstreams
from shared.model import VirtualService
from shared.model.proxy_config import Cluster, SniRoute, TcpListener, TcpRoute, WeightedCluster
from shared.model.virtual_service import RouteDestination, TCPRoute, TLSRoute, names_source, source_meets


def is_tcp(snapshot: Snapshot, service: str, port: int) -> bool:
    """Whether most instances of catalog service `service` serve its port `port` as TCP."""

    def build() -> bool:
        instances = snapshot.services.get(service, ())
        tcp = sum(1 for instance in instances if instance.serving(port).protocol == PROTOCOL_TCP)
        return tcp * 2 > len(instances)

    return snapshot.memoized(("tcp-port", service, port), build)


def _carries_tcp(snapshot: Snapshot, hosts: HostIndex, service: MeshService, port: int) -> bool:
    """Whether `port` of the service is TCP: for a ServiceEntry host, a declared port of a protocol other than
    the HTTP family (TCP, TLS, HTTPS, MONGO, MYSQL, REDIS)."""
    entry = hosts.entry(service)
    if entry is None:
        return is_tcp(snapshot, service.name, port)
    served = entry.spec.port(port)
    return served is not None and not served.is_http


def declared_upstreams(snapshot: Snapshot) -> Mapping[str, tuple[TcpUpstream, ...]]:
    """Proxy id -> the TCP upstreams its Meta declares (the first instance of a proxy id counts, as for proxies)."""

    def build() -> dict[str, tuple[TcpUpstream, ...]]:
        found: dict[str, tuple[TcpUpstream, ...]] = {}
        for instance in snapshot.instances:
            if instance.meshed and instance.proxy_id not in found:
                found[instance.proxy_id] = parse_tcp_upstreams(instance.meta.get(META_UPSTREAMS))
        return found

    return snapshot.memoized(("tcp-upstreams",), build)


def _weights(destinations: Sequence[RouteDestination]) -> list[int]:
    if all(d.weight is None for d in destinations):
        share, remainder = divmod(100, len(destinations))
        return [share + (1 if index < remainder else 0) for index in range(len(destinations))]
    return [d.weight or 0 for d in destinations]


def weighted_clusters(
    destinations: Sequence[RouteDestination], port: int, namespace: str, hosts: HostIndex, refs: set[ClusterRef]
) -> list[WeightedCluster]:
    """Route destinations (written in `namespace`) as weighted clusters; a destination without port goes to
    `port`. Every cluster is added to `refs`."""
    weighted = []
    for item, weight in zip(destinations, _weights(destinations), strict=True):
        target = item.destination
        ref = ClusterRef(
            host=hosts.cluster_host(target.host, namespace),
            port=target.port.number if target.port else port,
            subset=target.subset,
        )
        refs.add(ref)
        weighted.append(WeightedCluster(cluster=ref.name, weight=weight))
    return weighted


def tcp_route_of(
    tcp: TCPRoute, port: int, namespace: str, hosts: HostIndex, refs: set[ClusterRef], gateway: str = MESH_GATEWAY
) -> TcpRoute | None:
    """The route for connections to `port` through `gateway` (`mesh`: a sidecar's declared upstream); None when
    none of its match blocks applies there."""
    applying = for_gateway(tcp, gateway, namespace)
    if applying is None:
        return None
    tcp = applying
    kept = [block for block in tcp.match if block.port is None or block.port == port]
    if tcp.match and not kept:
        return None
    return TcpRoute(match=kept, route=weighted_clusters(tcp.route, port, namespace, hosts, refs))


def sni_route_of(tls: TLSRoute, port: int, namespace: str, hosts: HostIndex, refs: set[ClusterRef]) -> SniRoute | None:
    """A sidecar's route for TLS connections to `port` by SNI; None when none of its match blocks applies there
    (they name gateways only, or other ports)."""
    applying = for_gateway(tls, MESH_GATEWAY, namespace)
    if applying is None:
        return None
    names = sorted(
        {sni for block in applying.match if block.port is None or block.port == port for sni in block.sni_hosts}
    )
    if not names:
        return None
    return SniRoute(sni_hosts=names, route=weighted_clusters(applying.route, port, namespace, hosts, refs))


def _listener(
    upstream: str,
    port: int,
    service: MeshService,
    virtual_services: list[VirtualService],
    hosts: HostIndex,
    refs: set[ClusterRef],
) -> TcpListener:
    routes = [
        route
        for vs in virtual_services_for(service, virtual_services, hosts)
        for tcp in vs.spec.tcp
        if (route := tcp_route_of(tcp, port, vs.metadata.namespace, hosts, refs)) is not None
    ]
    if not routes:
        ref = ClusterRef(host=service.name, port=port, subset=None)
        refs.add(ref)
        routes = [TcpRoute(route=[WeightedCluster(cluster=ref.name, weight=100)])]
    sni = [
        sni_route
        for vs in virtual_services_for(service, virtual_services, hosts)
        for tls in vs.spec.tls
        if (sni_route := sni_route_of(tls, port, vs.metadata.namespace, hosts, refs)) is not None
    ]
    return TcpListener(
        name=f"{upstream}:{port}", service=service.name, upstream=upstream, port=port, routes=routes, sni_routes=sni
    )


def tcp_listeners(
    snapshot: Snapshot, hosts: HostIndex, virtual_services: list[VirtualService], refs: set[ClusterRef]
) -> list[TcpListener]:
    """A listener for every declared (name, port) that names a TCP port of a service, sorted by name; every
    cluster their routes use is added to `refs`."""
    wanted = sorted({(u.name, u.port) for upstreams in declared_upstreams(snapshot).values() for u in upstreams})
    listeners = []
    for name, port in wanted:
        service = hosts.by_name(name)
        if service is not None and _carries_tcp(snapshot, hosts, service, port):
            listeners.append(_listener(name, port, service, virtual_services, hosts, refs))
    return listeners


def _for_source(listener: TcpListener, labels: Mapping[str, str], namespace: str) -> TcpListener | None:
    routes = []
    for route in listener.routes:
        if not any(names_source(block) for block in route.match):
            routes.append(route)
            continue
        kept = [block for block in route.match if source_meets(block, labels, namespace)]
        if kept:
            routes.append(route.model_copy(update={"match": kept}))
    if not routes:
        return None
    return listener if routes == listener.routes else listener.model_copy(update={"routes": routes})


def proxy_listeners(snapshot: Snapshot, proxy: Proxy, everything: Iterable[TcpListener]) -> list[TcpListener]:
    """The listeners of the TCP upstreams `proxy` declares, as this caller sees them (`sourceLabels` and
    `sourceNamespace` applied)."""
    declared = {(u.name, u.port) for u in declared_upstreams(snapshot).get(proxy.proxy_id, ())}
    if not declared:
        return []
    chosen = (listener for listener in everything if (listener.upstream, listener.port) in declared)
    return [kept for listener in chosen if (kept := _for_source(listener, proxy.labels, proxy.namespace)) is not None]


def with_listener_clusters(
    clusters: Sequence[Cluster], listeners: Sequence[TcpListener], everything: Iterable[Cluster]
) -> list[Cluster]:
    """`clusters` plus those the listeners' routes use (taken from `everything`), in name order."""
    if not listeners:
        return list(clusters)
    have = {cluster.name for cluster in clusters}
    used: list[TcpRoute | SniRoute] = [route for listener in listeners for route in listener.routes]
    used += [route for listener in listeners for route in listener.sni_routes]
    wanted = {w.cluster for route in used for w in route.route} - have
    if not wanted:
        return list(clusters)
    extra = [cluster for cluster in everything if cluster.name in wanted]
    return sorted([*clusters, *extra], key=lambda cluster: cluster.name)
