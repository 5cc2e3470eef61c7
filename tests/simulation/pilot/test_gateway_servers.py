"""A gateway proxy's config: the servers of the Gateways that select it and the VirtualServices bound to them."""

from __future__ import annotations

from services.pilot.generate import generate
from services.pilot.testing import meshed, proxy_of, snapshot
from shared.model.proxy_config import GatewayServer, ProxyConfig

TD = "cluster.local"
ROOT = "isthmus-system"
GATEWAY_ID = "ingressgateway-10.0.9.1"
CATALOG = [
    meshed("ingressgateway", "10.0.9.1", namespace="istio-system", gateway=True, istio="ingressgateway"),
    meshed("frontend", "10.0.0.1", namespace="shop"),
    meshed("reviews", "10.0.1.1", namespace="shop", version="v1"),
    meshed("reviews", "10.0.1.2", namespace="shop", version="v2"),
]
GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*.example.com"]
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["shop/shop.example.com"]
    tls: {mode: SIMPLE, serverCertificate: /etc/gw/cert.pem, privateKey: /etc/gw/key.pem}
"""
SHOP = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.com]
  gateways: [public]
  http:
  - match: [{uri: {prefix: /reviews}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: frontend}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets: [{name: v2, labels: {version: v2}}]
"""


def gateway_config(config: str) -> ProxyConfig:
    snap = snapshot(CATALOG, config)
    return generate(snap, proxy_of(snap, GATEWAY_ID), TD, ROOT)


def server(config: ProxyConfig, port: int) -> GatewayServer:
    return next(server for server in config.gateway_servers if server.port == port)


def test_a_gateway_proxy_gets_its_servers_and_the_bound_routes_with_their_clusters() -> None:
    config = gateway_config(GATEWAY + "---" + SHOP)
    assert [(s.name, s.port, s.protocol) for s in config.gateway_servers] == [
        ("http-8080", 8080, "HTTP"),
        ("https-8443", 8443, "HTTPS"),
    ]
    assert config.virtual_hosts == []  # no sidecar part: it fronts no app
    for port in (8080, 8443):
        (host,) = server(config, port).virtual_hosts
        assert host.domains == ["shop.example.com"]
        assert [[w.cluster for w in route.route] for route in host.routes] == [
            ["outbound|80|v2|reviews"],
            ["outbound|80||frontend"],
        ]
    tls = server(config, 8443).tls
    assert tls is not None and (tls.mode, tls.server_certificate, tls.private_key) == (
        "SIMPLE",
        "/etc/gw/cert.pem",
        "/etc/gw/key.pem",
    )
    clusters = {cluster.name: cluster for cluster in config.clusters}
    assert sorted(clusters) == ["outbound|80|v2|reviews", "outbound|80||frontend"]
    (v2,) = clusters["outbound|80|v2|reviews"].endpoints
    assert v2.address == "10.0.1.2"
    assert v2.identity == "spiffe://cluster.local/ns/shop/sa/reviews"  # the gateway calls the mesh over mTLS


def test_a_sidecar_gets_no_gateway_servers_and_ignores_gateway_bound_routes() -> None:
    snap = snapshot(CATALOG, GATEWAY + "---" + SHOP)
    config = generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)
    assert config.gateway_servers == []
    assert "shop.example.com" not in {domain for host in config.virtual_hosts for domain in host.domains}


def test_a_gateway_that_selects_other_labels_gives_no_servers() -> None:
    config = gateway_config(GATEWAY.replace("istio: ingressgateway", "istio: egressgateway") + "---" + SHOP)
    assert config.gateway_servers == []
    assert config.clusters == []


def test_unbound_virtual_services_and_uncovered_hosts_stay_out() -> None:
    other = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mesh-only, namespace: shop}
spec:
  hosts: [api.example.com]
  http: [{route: [{destination: {host: frontend}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: elsewhere, namespace: shop}
spec:
  hosts: [shop.example.org]
  gateways: [shop/public]
  http: [{route: [{destination: {host: frontend}}]}]
"""
    config = gateway_config(GATEWAY + "---" + SHOP + other)
    assert [host.name for host in server(config, 8080).virtual_hosts] == ["shop.example.com"]


def test_a_server_host_namespace_admits_only_that_namespaces_virtual_services() -> None:
    foreign = SHOP.replace("namespace: shop}", "namespace: billing}").replace("[public]", "[shop/public]")
    config = gateway_config(GATEWAY + "---" + foreign)
    assert server(config, 8443).virtual_hosts == []  # the HTTPS server admits shop/ only
    assert [host.name for host in server(config, 8080).virtual_hosts] == ["shop.example.com"]  # */*.example.com


def test_match_level_gateways_split_one_route_between_gateway_and_mesh() -> None:
    both = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.example.com, reviews]
  gateways: [public, mesh]
  http:
  - match: [{uri: {prefix: /v2}, gateways: [public]}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews}}]
"""
    snap = snapshot(CATALOG, GATEWAY + "---" + SHOP + both)
    gateway = generate(snap, proxy_of(snap, GATEWAY_ID), TD, ROOT)
    host = next(h for h in server(gateway, 8080).virtual_hosts if h.name == "reviews.example.com")
    assert [len(route.match) for route in host.routes] == [1, 0]
    assert host.routes[0].match[0].gateways == []  # applied by pilot, not sent
    sidecar = generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)
    reviews = next(h for h in sidecar.virtual_hosts if h.name == "reviews")
    assert [[w.cluster for w in route.route] for route in reviews.routes] == [["outbound|80||reviews"]]


def test_https_redirect_answers_every_host_of_its_server() -> None:
    plain = 'hosts: ["*.example.com"]'
    redirecting = GATEWAY.replace(plain, plain + "\n    tls: {httpsRedirect: true}")
    config = gateway_config(redirecting + "---" + SHOP)
    (host,) = server(config, 8080).virtual_hosts
    assert host.domains == ["*.example.com"]
    (route,) = host.routes
    assert route.redirect is not None and route.redirect.scheme == "https"
    assert server(config, 8443).virtual_hosts[0].domains == ["shop.example.com"]


def test_servers_of_two_gateways_on_one_port_merge_and_https_picks_certificates_by_sni() -> None:
    second = """
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: second, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [api.example.net]
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [api.example.net]
    tls: {mode: SIMPLE, serverCertificate: /etc/other/cert.pem, privateKey: /etc/other/key.pem}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.net]
  gateways: [second]
  http: [{route: [{destination: {host: frontend}}]}]
"""
    config = gateway_config(GATEWAY + "---" + SHOP + second)
    assert sorted(host.name for host in server(config, 8080).virtual_hosts) == ["api.example.net", "shop.example.com"]
    https = server(config, 8443)
    assert https.tls is not None and https.tls.server_certificate == "/etc/gw/cert.pem"  # the default
    assert sorted(host.name for host in https.virtual_hosts) == ["api.example.net", "shop.example.com"]
    assert [(entry.hosts, entry.tls.server_certificate) for entry in https.sni_tls] == [
        (["shop.example.com"], "/etc/gw/cert.pem"),
        (["api.example.net"], "/etc/other/cert.pem"),
    ]


EDGE = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 5432, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: shop}
spec:
  hosts: ["*.example.com", "db.internal"]
  gateways: [edge]
  tls:
  - match: [{sniHosts: [shop.example.com, "*.example.org"], port: 9443}]
    route: [{destination: {host: frontend, port: {number: 8443}}}]
  - match: [{sniHosts: ["*"]}]
    route:
    - {destination: {host: reviews, subset: v2}, weight: 80}
    - {destination: {host: reviews}, weight: 20}
  - match: [{sniHosts: [other.example.com], port: 443}]
    route: [{destination: {host: frontend}}]
  tcp:
  - match: [{port: 5432}]
    route: [{destination: {host: reviews, port: {number: 5432}}}]
  - match: [{port: 15432}]
    route: [{destination: {host: frontend}}]
"""


def test_tls_passthrough_servers_route_by_sni_and_tcp_servers_by_port() -> None:
    config = gateway_config(EDGE + "---" + SHOP)
    tls = server(config, 9443)
    assert tls.protocol == "TLS" and tls.tls is None and tls.virtual_hosts == []
    assert [(route.sni_hosts, [(w.cluster, w.weight) for w in route.route]) for route in tls.sni_routes] == [
        (["shop.example.com"], [("outbound|8443||frontend", 100)]),  # *.example.org is not a server host
        (["*.example.com"], [("outbound|9443|v2|reviews", 80), ("outbound|9443||reviews", 20)]),
    ]  # the third route's block is for port 443 only
    tcp = server(config, 5432)
    assert [[(w.cluster, w.weight) for w in route.route] for route in tcp.tcp_routes] == [
        [("outbound|5432||reviews", 100)]
    ]
    names = {cluster.name for cluster in config.clusters}
    assert {"outbound|8443||frontend", "outbound|9443|v2|reviews", "outbound|5432||reviews"} <= names


def test_tcp_and_tls_servers_of_two_gateways_on_one_port_merge() -> None:
    other = EDGE.replace("name: edge, namespace: shop", "name: edge2, namespace: shop").replace(
        "gateways: [edge]", "gateways: [edge2]"
    )
    config = gateway_config(EDGE + "---" + other + "---" + SHOP)
    assert len(server(config, 9443).sni_routes) == 4
    assert len(server(config, 5432).tcp_routes) == 2
