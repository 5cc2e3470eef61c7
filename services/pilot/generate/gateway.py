"""Generation of a gateway proxy's servers: Gateways that select it, and the VirtualServices bound to them.

A gateway proxy (`isthmus-proxy --gateway`) takes every Gateway, in any namespace, whose `selector` its labels
meet (Istio's default scope). Each server port becomes one GatewayServer; servers of later Gateways (in
(namespace, name) order) on a port already taken join it when they speak the same protocol, and are left out
otherwise. HTTPS servers that share a port each bring their certificate for their hosts (`sni_tls`); the
first server's is the default.

A VirtualService is bound to a Gateway when its `gateways` name it (`<namespace>/<name>`, or `<name>` for one of
the VirtualService's own namespace). On a server, each of its hosts that a server host covers becomes a
virtual host, named by the more specific of the two (`*` on the server takes the VirtualService's host as it is;
`*.example.com` covers `shop.example.com`). A server host `namespace/dnsName` admits VirtualServices of that
namespace only (`*`: any, `.`: the Gateway's own). Several VirtualServices for one host are concatenated in
(namespace, name) order; a route's match blocks that name `gateways` apply only to those; delegates are merged in
as for sidecars; destinations resolve as for sidecars (short names in the VirtualService's namespace), and the
clusters they use (mTLS to meshed endpoints, DestinationRules applied) come with the servers. A host that no
VirtualService serves answers 404 NR. An HTTP server with `tls.httpsRedirect` answers every request on its hosts
with a 301 to `https://` on the default port, Envoy's `require_tls`.

A TCP server takes the `tcp` routes of the VirtualServices bound to it (hosts as above), in order, keeping the
match blocks for its port (so does a TLS server that terminates TLS: SIMPLE or MUTUAL, with its certificates as
an HTTPS server's); a TLS (PASSTHROUGH) server their `tls` routes, each with the SNI names its blocks
for this port give that a server host covers (the more specific name, as for hosts). A destination without a
port goes to the server's port. The proxy relays the connection as bytes (mTLS to a meshed endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.pilot.generate import delegate
from services.pilot.generate.clusters import MeshSecurity, clusters
from services.pilot.generate.hosts import HostIndex, gateway_view
from services.pilot.generate.routes import ClusterRef, bound_to, for_gateway, route_of
from services.pilot.generate.tcp import tcp_route_of, weighted_clusters
from services.pilot.snapshot import Proxy, Snapshot
from shared.model import Gateway, PeerAuthentication, VirtualService
from shared.model.gateway import (
    ANY_NAMESPACE,
    OWN_NAMESPACE,
    Server,
    ServerProtocol,
    ServerTls,
    ServerTlsMode,
    covered,
)
from shared.model.proxy_config import (
    Cluster,
    GatewayServer,
    GatewayTls,
    Route,
    SniRoute,
    SniTls,
    TcpRoute,
    VirtualHost,
)
from shared.model.virtual_service import HTTPRedirect, RedirectPortSelection

HTTPS_REDIRECT = Route(
    name="https-redirect",
    redirect=HTTPRedirect(scheme="https", derive_port=RedirectPortSelection.FROM_PROTOCOL_DEFAULT),
)


@dataclass
class _Port:
    protocol: ServerProtocol
    tls: ServerTls | None
    servers: list[tuple[Gateway, Server]] = field(default_factory=list)


def _admits(server_namespace: str, gateway: Gateway, virtual_service: VirtualService) -> bool:
    if server_namespace == ANY_NAMESPACE:
        return True
    wanted = gateway.metadata.namespace if server_namespace == OWN_NAMESPACE else server_namespace
    return virtual_service.metadata.namespace == wanted


def _full_name(gateway: Gateway) -> str:
    return f"{gateway.metadata.namespace}/{gateway.metadata.name}"


_MERGING = tuple(ServerProtocol)
"""Protocols whose servers (of one or several Gateways) share a port: every one of them, as Istio merges them."""


def _passes(tls: ServerTls | None) -> bool:
    return tls is not None and tls.mode == ServerTlsMode.PASSTHROUGH


def _ports(gateways: list[Gateway]) -> dict[int, _Port]:
    ports: dict[int, _Port] = {}
    for gateway in gateways:
        for server in gateway.spec.servers:
            number, protocol = server.port.number, server.port.protocol
            taken = ports.get(number)
            if taken is None:
                ports[number] = _Port(protocol, server.tls, [(gateway, server)])
            elif taken.protocol == protocol and protocol in _MERGING and _passes(taken.tls) == _passes(server.tls):
                taken.servers.append((gateway, server))
    return ports


@dataclass
class _Hosts:
    """One port's virtual hosts as they are gathered: domain -> routes, first come first kept."""

    routes: dict[str, list[Route]] = field(default_factory=dict)

    def virtual_hosts(self) -> list[VirtualHost]:
        return [
            VirtualHost(name=domain, domains=[domain], routes=routes)
            for domain, routes in self.routes.items()
            if routes
        ]


class _Generator:
    def __init__(self, snapshot: Snapshot, namespace: str, trust_domain: str, root_namespace: str) -> None:
        seen = gateway_view(snapshot, namespace, root_namespace)
        self._snapshot = snapshot
        self._virtual_services = seen.virtual_services
        self._rules = seen.rules
        self._hosts = HostIndex(snapshot, seen.entries)
        self._security = MeshSecurity(trust_domain, root_namespace, tuple(snapshot.of_kind(PeerAuthentication)))
        self._visibility = seen.visibility
        self.refs: set[ClusterRef] = set()

    def _bound(self, gateway: Gateway, server: Server) -> list[VirtualService]:
        """The VirtualServices bound to the Gateway with a host the server serves, in (namespace, name) order."""
        name = _full_name(gateway)
        found = []
        for virtual_service in self._virtual_services:
            namespace = virtual_service.metadata.namespace
            if not bound_to(name, virtual_service.spec.gateways, namespace):
                continue
            if any(
                covered(host, dns_name) is not None and _admits(server_namespace, gateway, virtual_service)
                for host in virtual_service.spec.hosts
                for server_namespace, _, dns_name in (entry.partition("/") for entry in server.hosts)
            ):
                found.append(virtual_service)
        return found

    def tcp_routes(self, gateway: Gateway, server: Server) -> list[TcpRoute]:
        name, port = _full_name(gateway), server.port.number
        return [
            route
            for vs in self._bound(gateway, server)
            for tcp in vs.spec.tcp
            if (route := tcp_route_of(tcp, port, vs.metadata.namespace, self._hosts, self.refs, name)) is not None
        ]

    def sni_routes(self, gateway: Gateway, server: Server) -> list[SniRoute]:
        name, port = _full_name(gateway), server.port.number
        routes = []
        for vs in self._bound(gateway, server):
            namespace = vs.metadata.namespace
            for tls in vs.spec.tls:
                applying = for_gateway(tls, name, namespace)
                if applying is None:
                    continue
                names = sorted(
                    {
                        domain
                        for block in applying.match
                        if block.port is None or block.port == port
                        for sni in block.sni_hosts
                        for entry in server.hosts
                        if _admits(entry.partition("/")[0], gateway, vs)
                        and (domain := covered(sni, entry.partition("/")[2])) is not None
                    }
                )
                if names:
                    clusters = weighted_clusters(tls.route, port, namespace, self._hosts, self.refs)
                    routes.append(SniRoute(sni_hosts=names, route=clusters))
        return routes

    def server_hosts(self, gateway: Gateway, server: Server, into: _Hosts) -> None:
        tls = server.tls
        if tls is not None and tls.https_redirect:
            for entry in server.hosts:
                into.routes.setdefault(entry.partition("/")[2], [HTTPS_REDIRECT])
            return
        name = _full_name(gateway)
        bound: dict[str, list[VirtualService]] = {}
        for virtual_service in self._virtual_services:
            namespace = virtual_service.metadata.namespace
            if not bound_to(name, virtual_service.spec.gateways, namespace):
                continue
            for host in virtual_service.spec.hosts:
                for entry in server.hosts:
                    server_namespace, _, dns_name = entry.partition("/")
                    domain = covered(host, dns_name)
                    if domain is not None and _admits(server_namespace, gateway, virtual_service):
                        serving = bound.setdefault(domain, [])
                        if virtual_service not in serving:
                            serving.append(virtual_service)
        for domain, serving in bound.items():
            if domain not in into.routes:
                into.routes[domain] = self._routes(name, serving)

    def _routes(self, gateway: str, serving: list[VirtualService]) -> list[Route]:
        delegates = delegate.find(delegate.wanted(tuple(serving)), self._virtual_services)
        return [
            route_of(kept, vs.metadata.namespace, self._hosts, self.refs)
            for vs in serving
            for http in delegate.expand(vs, delegates)
            if (kept := for_gateway(http, gateway, vs.metadata.namespace)) is not None
        ]

    def clusters(self) -> list[Cluster]:
        return clusters(self.refs, self._snapshot, self._rules, self._hosts, self._security, self._visibility)


def _tls(tls: ServerTls | None) -> GatewayTls | None:
    if tls is None or tls.mode is None or tls.server_certificate is None or tls.private_key is None:
        return None
    return GatewayTls(
        mode=tls.mode,
        server_certificate=tls.server_certificate,
        private_key=tls.private_key,
        ca_certificates=tls.ca_certificates,
        min_protocol_version=tls.min_protocol_version,
        max_protocol_version=tls.max_protocol_version,
    )


def _sni_tls(port: _Port) -> list[SniTls]:
    """Each HTTPS server's certificate with the names it serves, when the port's servers bring more than one."""
    entries = [
        SniTls(hosts=sorted({entry.partition("/")[2] for entry in server.hosts}), tls=tls)
        for _, server in port.servers
        if (tls := _tls(server.tls)) is not None
    ]
    return entries if len({entry.tls for entry in entries}) > 1 else []


def gateway_servers(
    snapshot: Snapshot, proxy: Proxy, trust_domain: str, root_namespace: str
) -> tuple[list[GatewayServer], list[Cluster]]:
    """The gateway proxy's servers, by port, and the clusters their routes use."""
    labels = dict(proxy.labels)
    gateways = [gateway for gateway in snapshot.of_kind(Gateway) if gateway.spec.matches(labels)]
    generator = _Generator(snapshot, proxy.namespace, trust_domain, root_namespace)
    servers = []
    for number, port in sorted(_ports(gateways).items()):
        gathered = _Hosts()
        passthrough = _passes(port.tls)
        terminates = port.protocol == ServerProtocol.HTTPS or (port.protocol == ServerProtocol.TLS and not passthrough)
        tcp: list[TcpRoute] = []
        sni: list[SniRoute] = []
        for gateway, server in port.servers:
            if port.protocol == ServerProtocol.TCP or (port.protocol == ServerProtocol.TLS and not passthrough):
                tcp += generator.tcp_routes(gateway, server)
            elif port.protocol == ServerProtocol.TLS:
                sni += generator.sni_routes(gateway, server)
            else:
                generator.server_hosts(gateway, server, gathered)
        servers.append(
            GatewayServer(
                name=f"{port.protocol.lower()}-{number}",
                port=number,
                protocol=port.protocol,
                tls=_tls(port.tls) if terminates else None,
                sni_tls=_sni_tls(port) if terminates else [],
                virtual_hosts=gathered.virtual_hosts(),
                tcp_routes=tcp,
                sni_routes=sni,
            )
        )
    return servers, generator.clusters()
