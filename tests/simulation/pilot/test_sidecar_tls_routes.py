"""VirtualService `tls` routes on a sidecar's TCP listener: config + the client's SNI -> cluster, no sockets."""

from __future__ import annotations

import random
from collections import Counter

from services.pilot.generate import generate
from services.pilot.testing import meshed, proxy_of, snapshot
from services.proxy.tcp_routes import cluster_for, reads_sni
from shared.consul import META_UPSTREAMS, TcpUpstream
from shared.model.proxy_config import ProxyConfig

TD = "cluster.local"
ROOT = "isthmus-system"
CALLER = meshed("billing", "10.0.0.1", **{META_UPSTREAMS: "api.example.com:443"})
UPSTREAM = TcpUpstream("api.example.com", 443, 443)

CONFIG = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints:
  - {address: 192.0.2.10, labels: {pool: blue}}
  - {address: 192.0.2.20, labels: {pool: green}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api.example.com
  subsets:
  - {name: blue, labels: {pool: blue}}
  - {name: green, labels: {pool: green}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api.example.com]
  tls:
  - match: [{sniHosts: [api.example.com], port: 443}]
    route:
    - {destination: {host: api.example.com, subset: blue}, weight: 75}
    - {destination: {host: api.example.com, subset: green}, weight: 25}
  - match: [{sniHosts: ["*.eu.example.com"]}]
    route: [{destination: {host: api.example.com, subset: green}}]
  - match: [{sniHosts: [gateway-only.example.com], gateways: [edge]}]
    route: [{destination: {host: api.example.com, subset: green}}]
"""


def _config(text: str = CONFIG) -> ProxyConfig:
    snap = snapshot([CALLER], text)
    return generate(snap, proxy_of(snap, "billing-10.0.0.1"), TD, ROOT)


def test_tls_routes_become_the_listeners_sni_routes_and_their_clusters_are_sent() -> None:
    config = _config()
    (listener,) = config.tcp_listeners
    assert [route.sni_hosts for route in listener.sni_routes] == [["api.example.com"], ["*.eu.example.com"]]
    names = {cluster.name for cluster in config.clusters}
    assert {"outbound|443|blue|api.example.com", "outbound|443|green|api.example.com"} <= names
    assert reads_sni(config, UPSTREAM)


def test_the_sni_picks_the_route_and_weights_split_the_connections() -> None:
    config = _config()
    rng = random.Random(7)
    picks = Counter(cluster_for(config, UPSTREAM, rng, "api.example.com") for _ in range(4000))
    assert abs(picks["outbound|443|blue|api.example.com"] / 4000 - 0.75) < 0.03
    assert cluster_for(config, UPSTREAM, rng, "fr.eu.example.com") == "outbound|443|green|api.example.com"


def test_an_sni_no_route_covers_or_none_at_all_follows_the_tcp_routes() -> None:
    config = _config()
    rng = random.Random(1)
    assert cluster_for(config, UPSTREAM, rng, "gateway-only.example.com") == "outbound|443||api.example.com"
    assert cluster_for(config, UPSTREAM, rng, None) == "outbound|443||api.example.com"


def test_without_tls_routes_the_client_hello_is_not_read() -> None:
    plain = CONFIG.split("---\napiVersion: networking.istio.io/v1\nkind: VirtualService")[0]
    assert not reads_sni(_config(plain), UPSTREAM)
