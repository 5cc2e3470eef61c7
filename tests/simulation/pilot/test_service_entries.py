"""ServiceEntry hosts from config to decision: virtual hosts, clusters and endpoints, routing policy, scoping, reuse."""

from __future__ import annotations

import random
from dataclasses import replace

from services.pilot.generate import generate
from services.pilot.reuse import Reuse
from services.pilot.snapshot import Instance, Snapshot
from services.pilot.testing import meshed, plain, proxy_of, resources, snapshot
from services.proxy.router import RouteTable
from shared.consul import META_UPSTREAMS
from shared.model.proxy_config import Cluster, ProxyConfig, VirtualHost

TD = "cluster.local"
ROOT = "isthmus-system"

CATALOG = [
    meshed("frontend", "10.0.0.1", namespace="shop"),
    meshed("reviews", "10.0.1.1", version="v1"),
    plain("ratings", "10.0.2.1", 8080),
]

STATIC = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: shop}
spec:
  hosts: [api.payments.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: http, targetPort: 8080}
  - {number: 9090, name: admin, protocol: HTTP}
  endpoints:
  - {address: 192.0.2.10, labels: {version: v1}, locality: eu/west-1}
  - {address: 192.0.2.11, labels: {version: v2}, ports: {http: 8443}}
---
"""

DNS = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: weather, namespace: default}
spec:
  hosts: [weather.example.com, maps.example.com]
  resolution: DNS
  ports: [{number: 8000, name: http-api, protocol: HTTP, targetPort: 80}]
---
"""

DNS_ENDPOINTS = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: search, namespace: default}
spec:
  hosts: [search.example.com]
  resolution: DNS_ROUND_ROBIN
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: search-eu.example.net, ports: {http: 8080}}]
---
"""

DATABASE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.com]
  resolution: STATIC
  ports: [{number: 5432, name: postgres, protocol: TCP}]
  endpoints: [{address: 192.0.2.50}]
---
"""


def config_of(instances: list[Instance], text: str, proxy_id: str = "frontend-10.0.0.1") -> ProxyConfig:
    snap = snapshot(instances, text)
    return generate(snap, proxy_of(snap, proxy_id), TD, ROOT)


def vhost(config: ProxyConfig, name: str) -> VirtualHost:
    return next(v for v in config.virtual_hosts if v.name == name)


def cluster(config: ProxyConfig, name: str) -> Cluster:
    return next(c for c in config.clusters if c.name == name)


def endpoints(config: ProxyConfig, name: str) -> list[tuple[str, int]]:
    return [(e.address, e.port) for e in cluster(config, name).endpoints]


def test_static_host_gets_its_own_virtual_host_after_the_catalog() -> None:
    config = config_of(CATALOG, STATIC)
    assert [v.name for v in config.virtual_hosts] == ["frontend", "ratings", "reviews", "api.payments.example"]
    host = vhost(config, "api.payments.example")
    assert host.domains == ["api.payments.example"]
    assert [w.cluster for r in host.routes for w in r.route] == ["outbound|80||api.payments.example"]


VS_ADMIN = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payments-admin, namespace: shop}
spec:
  hosts: [ratings.default]
  http:
  - route: [{destination: {host: api.payments.example, port: {number: 9090}}}]
---
"""


def test_static_endpoints_use_their_port_entry_else_the_target_port_else_the_number() -> None:
    config = config_of(CATALOG, STATIC + VS_ADMIN)
    http = cluster(config, "outbound|80||api.payments.example")
    assert [(e.address, e.port, e.identity, e.healthy) for e in http.endpoints] == [
        ("192.0.2.10", 8080, None, True),
        ("192.0.2.11", 8443, None, True),
    ]
    assert [e.labels for e in http.endpoints] == [{"locality": "eu/west-1", "version": "v1"}, {"version": "v2"}]
    assert endpoints(config, "outbound|9090||api.payments.example") == [("192.0.2.10", 9090), ("192.0.2.11", 9090)]


def test_dns_without_endpoints_dials_the_host_itself_at_the_target_port() -> None:
    config = config_of(CATALOG, DNS)
    assert endpoints(config, "outbound|8000||weather.example.com") == [("weather.example.com", 80)]
    assert endpoints(config, "outbound|8000||maps.example.com") == [("maps.example.com", 80)]
    assert vhost(config, "maps.example.com").domains == ["maps.example.com"]


def test_dns_endpoints_keep_their_names() -> None:
    config = config_of(CATALOG, DNS_ENDPOINTS)
    assert endpoints(config, "outbound|80||search.example.com") == [("search-eu.example.net", 8080)]


def test_the_host_header_with_or_without_port_reaches_the_entry() -> None:
    table = RouteTable.build(config_of(CATALOG, DNS), random.Random(1))
    for authority in ("weather.example.com", "weather.example.com:8000", "Weather.Example.com:80"):
        decision = table.decide("GET", authority, "/forecast", {})
        assert decision.virtual_host == "weather.example.com"
        assert decision.destination is not None
        assert decision.destination.cluster == "outbound|8000||weather.example.com"


RESILIENCE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: weather, namespace: shop}
spec:
  hosts: [weather.example.com]
  http:
  - timeout: 2s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: 5xx}
    route: [{destination: {host: weather.example.com}}]
---
"""


def test_virtual_service_timeout_and_retries_apply_and_a_portless_destination_takes_the_lone_http_port() -> None:
    config = config_of(CATALOG, DNS + RESILIENCE)
    (route,) = vhost(config, "weather.example.com").routes
    assert route.timeout == 2.0
    assert route.retries is not None and (route.retries.attempts, route.retries.per_try_timeout) == (3, 0.5)
    assert [w.cluster for w in route.route] == ["outbound|8000||weather.example.com"]
    assert [r.timeout for r in vhost(config, "maps.example.com").routes] == [None]


VS_PORTLESS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-to-payments, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: api.payments.example}}]
  - route: [{destination: {host: api.payments.example, port: {number: 9090}}}]
---
"""


def test_a_portless_destination_to_an_entry_with_several_http_ports_goes_to_80() -> None:
    text = STATIC.replace("number: 80, name: http", "number: 8081, name: http") + VS_PORTLESS
    config = config_of(CATALOG, text.replace("ports: {http: 8443}", "ports: {http: 8443, admin: 9443}"))
    assert [w.cluster for w in vhost(config, "reviews").routes[0].route] == ["outbound|80||api.payments.example"]
    assert cluster(config, "outbound|80||api.payments.example").endpoints == []
    # The entry's own catch-all route takes its first HTTP-family port.
    assert [w.cluster for w in vhost(config, "api.payments.example").routes[0].route] == [
        "outbound|8081||api.payments.example"
    ]
    assert endpoints(config, "outbound|9090||api.payments.example") == [("192.0.2.10", 9090), ("192.0.2.11", 9443)]


def test_wildcard_virtual_service_hosts_cover_entry_hosts() -> None:
    wildcard = RESILIENCE.replace("hosts: [weather.example.com]", "hosts: ['*.example.com']")
    config = config_of(CATALOG, DNS + wildcard)
    for name in ("weather.example.com", "maps.example.com"):
        assert [r.timeout for r in vhost(config, name).routes] == [2.0]


SUBSETS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payments, namespace: shop}
spec:
  host: api.payments.example
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 4}}
    outlierDetection: {consecutive5xxErrors: 2}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payments, namespace: shop}
spec:
  hosts: [api.payments.example]
  http:
  - route:
    - {destination: {host: api.payments.example, subset: v1}, weight: 90}
    - {destination: {host: api.payments.example, subset: v2}, weight: 10}
---
"""


def test_destination_rule_subsets_select_entry_endpoints_by_label() -> None:
    config = config_of(CATALOG, STATIC + SUBSETS)
    assert [(w.cluster, w.weight) for w in vhost(config, "api.payments.example").routes[0].route] == [
        ("outbound|80|v1|api.payments.example", 90),
        ("outbound|80|v2|api.payments.example", 10),
    ]
    assert endpoints(config, "outbound|80|v1|api.payments.example") == [("192.0.2.10", 8080)]
    assert endpoints(config, "outbound|80|v2|api.payments.example") == [("192.0.2.11", 8443)]
    policy = cluster(config, "outbound|80|v2|api.payments.example").traffic_policy
    assert policy is not None and policy.outlier_detection is not None
    assert policy.outlier_detection.consecutive_5xx_errors == 2
    assert policy.connection_pool is not None and policy.connection_pool.tcp is not None
    assert policy.connection_pool.tcp.max_connections == 4


MUTUAL = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: vm-api, namespace: shop}
spec:
  host: api.payments.example
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
"""


def test_istio_mutual_to_a_mesh_internal_entry_expects_the_endpoint_service_account() -> None:
    internal = STATIC.replace("MESH_EXTERNAL", "MESH_INTERNAL").replace(
        "address: 192.0.2.11,", "address: 192.0.2.11, serviceAccount: payments,"
    )
    http = cluster(config_of(CATALOG, internal + MUTUAL), "outbound|80||api.payments.example")
    assert [e.identity for e in http.endpoints] == [
        "spiffe://cluster.local/ns/shop/sa/default",
        "spiffe://cluster.local/ns/shop/sa/payments",
    ]


def test_istio_mutual_to_a_mesh_external_entry_fails_closed() -> None:
    assert cluster(config_of(CATALOG, STATIC + MUTUAL), "outbound|80||api.payments.example").endpoints == []


def with_upstreams(upstreams: str) -> list[Instance]:
    front = CATALOG[0]
    return [replace(front, meta={**front.meta, META_UPSTREAMS: upstreams}), *CATALOG[1:]]


def test_a_proxy_declaring_upstreams_gets_an_entry_host_only_when_it_names_it() -> None:
    named = config_of(with_upstreams("reviews,weather.example.com"), DNS)
    assert [v.name for v in named.virtual_hosts] == ["reviews", "weather.example.com"]
    assert [c.name for c in named.clusters] == ["outbound|8000||weather.example.com", "outbound|80||reviews"]
    unnamed = config_of(with_upstreams("reviews"), DNS)
    assert [v.name for v in unnamed.virtual_hosts] == ["reviews"]
    everything = config_of(CATALOG, DNS)
    assert {"weather.example.com", "maps.example.com"} <= {v.name for v in everything.virtual_hosts}


def test_a_catalog_service_keeps_a_domain_an_entry_declares() -> None:
    clash = DNS.replace("maps.example.com", "reviews.default.svc.cluster.local")
    config = config_of(CATALOG, clash)
    assert [v.name for v in config.virtual_hosts] == ["frontend", "ratings", "reviews", "weather.example.com"]
    assert endpoints(config, "outbound|80||reviews") == [("10.0.1.1", 15006)]
    assert not any("reviews.default.svc.cluster.local" in c.name for c in config.clusters)


def test_an_entry_without_http_ports_serves_tcp_listeners_only() -> None:
    config = config_of(with_upstreams("db.example.com:5432"), DATABASE)
    assert "db.example.com" not in {v.name for v in config.virtual_hosts}
    (listener,) = config.tcp_listeners
    assert (listener.name, listener.service, listener.port) == ("db.example.com:5432", "db.example.com", 5432)
    assert [w.cluster for w in listener.routes[0].route] == ["outbound|5432||db.example.com"]
    assert endpoints(config, "outbound|5432||db.example.com") == [("192.0.2.50", 5432)]
    # An HTTP-family port is not a TCP upstream.
    assert config_of(with_upstreams("weather.example.com:8000"), DNS).tcp_listeners == []


def test_an_entry_change_reaches_the_next_config_through_reuse() -> None:
    reuse = Reuse()
    front = "frontend-10.0.0.1"
    first = Snapshot.build(resources(STATIC + RESILIENCE.replace("weather", "api.payments")), CATALOG, reuse)
    before = generate(first, proxy_of(first, front), TD, ROOT)
    assert endpoints(before, "outbound|80||api.payments.example") == [("192.0.2.10", 8080), ("192.0.2.11", 8443)]
    moved = STATIC.replace("192.0.2.10", "192.0.2.20").replace("targetPort: 8080", "targetPort: 8088")
    second = Snapshot.build(resources(moved + RESILIENCE.replace("weather", "api.payments")), CATALOG, reuse)
    after = generate(second, proxy_of(second, front), TD, ROOT)
    assert endpoints(after, "outbound|80||api.payments.example") == [("192.0.2.11", 8443), ("192.0.2.20", 8088)]
    assert after.versioned().version != before.versioned().version
    fresh = Snapshot.build(resources(moved + RESILIENCE.replace("weather", "api.payments")), CATALOG)
    assert after.stamped() == generate(fresh, proxy_of(fresh, front), TD, ROOT).stamped()
    assert reuse.hits > 0


def test_an_entry_port_change_moves_the_catch_all_and_portless_destinations() -> None:
    reuse = Reuse()
    front = "frontend-10.0.0.1"
    routed = DNS + VS_PORTLESS.replace("api.payments.example", "weather.example.com")
    first = Snapshot.build(resources(routed), CATALOG, reuse)
    generate(first, proxy_of(first, front), TD, ROOT)
    second = Snapshot.build(resources(routed.replace("number: 8000", "number: 8001")), CATALOG, reuse)
    after = generate(second, proxy_of(second, front), TD, ROOT)
    assert [w.cluster for w in vhost(after, "maps.example.com").routes[0].route] == ["outbound|8001||maps.example.com"]
    assert [w.cluster for w in vhost(after, "reviews").routes[0].route] == ["outbound|8001||weather.example.com"]


def test_output_is_deterministic_whatever_the_resource_order() -> None:
    text = [STATIC, DNS, DNS_ENDPOINTS, DATABASE, SUBSETS]
    one = config_of(CATALOG, "".join(text))
    other = config_of(CATALOG, "".join(reversed(text)))
    assert one.stamped() == other.stamped()


W8000 = "outbound|8000||weather.example.com"
ORIGINATE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: weather, namespace: default}
spec:
  host: weather.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 8000}
      tls: {mode: SIMPLE, sni: weather.example.com}
---
"""


def test_tls_origination_reaches_the_entry_cluster_whose_endpoints_stay_without_identity() -> None:
    http = cluster(config_of(CATALOG, DNS.replace("targetPort: 80", "targetPort: 443") + ORIGINATE), W8000)
    assert [(e.address, e.port, e.identity) for e in http.endpoints] == [("weather.example.com", 443, None)]
    assert http.traffic_policy is not None and http.traffic_policy.tls is not None
    assert (http.traffic_policy.tls.mode, http.traffic_policy.tls.sni) == ("SIMPLE", "weather.example.com")
