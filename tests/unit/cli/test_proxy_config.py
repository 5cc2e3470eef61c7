"""`isthmus proxy-config`: a dump rendered as routes / clusters / endpoints / certificate; admin answers checked."""

from __future__ import annotations

from services.cli.proxy_config import Dump, from_admin, render
from services.pilot.generate import generate
from services.pilot.testing import meshed, plain, proxy_of, snapshot
from shared.bus.codec import Ack
from shared.consul import META_PROTOCOL


def config_of_a() -> Dump:
    grpc = meshed("rates", "10.0.0.3", **{META_PROTOCOL: "grpc"})
    snap = snapshot(
        [meshed("a", "10.0.0.1"), meshed("b", "10.0.0.2", healthy=False), plain("db", "10.0.0.9", 5432), grpc]
    )
    config = generate(snap, proxy_of(snap, "a-10.0.0.1"), "cluster.local", "isthmus-system").versioned()
    return Dump("test", config, ack=Ack(proxy_id="a-10.0.0.1", version=config.version, accepted=True))


def test_every_section_lists_its_items() -> None:
    dump = config_of_a()
    text = render(dump)
    assert text.splitlines()[0] == f"proxy a-10.0.0.1 (a.default) version {dump.config.version}"
    assert f"last answer: ACK for {dump.config.version}" in text
    routes = text.split("ROUTES\n")[1].split("\n\n")[0].splitlines()
    assert routes[0].split() == ["VIRTUAL", "HOST", "ROUTE", "MATCH", "DESTINATIONS"]
    assert any(line.split()[:2] == ["db", "default"] and "outbound|80||db 100" in line for line in routes)
    endpoints = text.split("ENDPOINTS\n")[1]
    assert "10.0.0.2:15006  no" in endpoints and "spiffe://cluster.local/ns/default/sa/b" in endpoints
    assert "10.0.0.9:5432   yes      HTTP/1.1  (plain text)" in endpoints
    assert "10.0.0.3:15006  yes      HTTP/2    spiffe://cluster.local/ns/default/sa/rates" in endpoints
    assert "(not known: the proxy's admin endpoint was not reachable)" in text


def test_sections_can_be_picked_and_certificate_shown() -> None:
    dump = Dump("admin", config_of_a().config, {"spiffeId": "spiffe://cluster.local/ns/default/sa/a", "notAfter": "x"})
    text = render(dump, ("certificate",))
    assert "ROUTES" not in text and "spiffe://cluster.local/ns/default/sa/a  x" in text


def test_unreachable_admin_is_no_answer() -> None:
    assert from_admin("http://127.0.0.1:9", "a") is None


def test_a_gateway_proxy_shows_its_servers_and_their_routes() -> None:
    gateway = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [shop.example.test]
    tls: {mode: SIMPLE, serverCertificate: /etc/gw/cert.pem, privateKey: /etc/gw/key.pem}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.example.test]
  gateways: [public]
  http: [{route: [{destination: {host: a}}]}]
"""
    catalog = [meshed("a", "10.0.0.1"), meshed("gw", "10.0.9.1", gateway=True, istio="ingressgateway")]
    snap = snapshot(catalog, gateway)
    text = render(Dump("test", generate(snap, proxy_of(snap, "gw-10.0.9.1"), "cluster.local", "isthmus-system")))
    servers = text.split("GATEWAY SERVERS\n")[1].split("\n\n")[0].splitlines()
    assert servers[1].split() == ["http-8080", "8080", "HTTP", "-", "*"]
    assert servers[2].split() == ["https-8443", "8443", "HTTPS", "SIMPLE", "/etc/gw/cert.pem", "shop.example.test"]
    routes = [line.split() for line in text.split("ROUTES\n")[1].split("\n\n")[0].splitlines()]
    assert ["http-8080/*", "https-redirect", "*", "redirect", "301", "https"] in routes
    assert ["https-8443/shop.example.test", "#0", "*", "outbound|80||a", "100"] in routes


INBOUND_CONFIG = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: a, namespace: default}
spec:
  workloadSelector: {labels: {app: a}}
  inboundConnectionPool: {http: {http2MaxRequests: 100}}
  ingress:
  - port: {number: 9080}
    defaultEndpoint: unix:///run/a.sock
    connectionPool: {tcp: {maxConnections: 4}, http: {http1MaxPendingRequests: 2}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: a, namespace: default}
spec:
  selector: {matchLabels: {app: a}}
  mtls: {mode: STRICT}
  portLevelMtls: {5432: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-b, namespace: default}
spec:
  selector: {matchLabels: {app: a}}
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/b]}}]}]
"""


def test_the_inbound_section_shows_modes_policies_and_how_the_app_is_called() -> None:
    snap = snapshot([meshed("a", "10.0.0.1", app="a")], INBOUND_CONFIG)
    config = generate(snap, proxy_of(snap, "a-10.0.0.1"), "cluster.local", "isthmus-system")
    inbound = render(Dump("test", config), ("inbound",)).split("INBOUND\n")[1].splitlines()
    assert inbound == [
        "mTLS: STRICT (port 5432: DISABLE)",
        "APP PORT  CALLED AT           LIMITS",
        "9080      unix:///run/a.sock  tcp.maxConnections=4, http.http1MaxPendingRequests=2",
        "(others)  (the port itself)   http.http2MaxRequests=100",
        "authorization: default/only-b",
        "JWT rules: (none)",
    ]
