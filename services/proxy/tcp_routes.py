"""First step of a TCP connection on the outbound side: pure route and cluster choice for one declared upstream.

The listener config of the upstream (`name:port`) comes from the snapshot current when the connection is
accepted; the first route whose match blocks are empty or include one for the listener's port takes the
connection (pilot already dropped the blocks this caller's labels cannot meet), and its weights pick one
cluster for the whole connection. No listener or no matching route: the connection is closed (flag NR).
A listener with TLS routes (VirtualService `tls`) first routes by the SNI of the client's ClientHello; a name
none of them covers, or a ClientHello without one, follows the TCP routes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.proxy.errors import NoRoute
from services.proxy.sni import covers
from shared.consul import TcpUpstream
from shared.model.proxy_config import ProxyConfig, SniRoute, TcpListener, TcpRoute


@dataclass(frozen=True, slots=True)
class TcpDecision:
    listener: TcpListener
    route: TcpRoute
    cluster: str


def listener_for(config: ProxyConfig, upstream: TcpUpstream) -> TcpListener:
    for listener in config.tcp_listeners:
        if listener.upstream == upstream.name and listener.port == upstream.port:
            return listener
    raise NoRoute(f"no TCP listener for upstream {upstream.name}:{upstream.port} (is the service declared tcp?)")


def _matches(route: TcpRoute, port: int) -> bool:
    return not route.match or any(block.port is None or block.port == port for block in route.match)


def pick_weighted(route: TcpRoute | SniRoute, rng: random.Random) -> str:
    """One cluster by relative weight; all weights 0: the first one (Envoy's total-weight-0 case never routes
    here: pilot gives a lone destination 100)."""
    total = sum(w.weight for w in route.route)
    if total <= 0:
        return route.route[0].cluster
    point = rng.randrange(total)
    for weighted in route.route:
        if point < weighted.weight:
            return weighted.cluster
        point -= weighted.weight
    raise AssertionError("weighted pick fell off the end")  # pragma: no cover - sums guarantee a pick


def cluster_for(config: ProxyConfig, upstream: TcpUpstream, rng: random.Random, server_name: str | None) -> str:
    """The cluster for one connection: by the first TLS route covering `server_name` (the client's SNI), else
    as `decide` picks; raises NoRoute when the upstream has no listener or nothing applies."""
    if server_name is not None:
        for sni_route in listener_for(config, upstream).sni_routes:
            if any(covers(pattern, server_name) for pattern in sni_route.sni_hosts):
                return pick_weighted(sni_route, rng)
    return decide(config, upstream, rng).cluster


def reads_sni(config: ProxyConfig, upstream: TcpUpstream) -> bool:
    """Whether connections to the upstream are routed by SNI first (its listener has TLS routes)."""
    try:
        return bool(listener_for(config, upstream).sni_routes)
    except NoRoute:
        return False


def decide(config: ProxyConfig, upstream: TcpUpstream, rng: random.Random) -> TcpDecision:
    """Raises NoRoute when the upstream has no listener or none of its routes applies."""
    listener = listener_for(config, upstream)
    for route in listener.routes:
        if _matches(route, listener.port):
            return TcpDecision(listener, route, pick_weighted(route, rng))
    raise NoRoute(f"no TCP route of {listener.name} matches port {listener.port}")
