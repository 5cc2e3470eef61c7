"""Routing simulation: catalog + VirtualServices/DestinationRules -> the virtual hosts and clusters a proxy gets."""

from __future__ import annotations

import pytest

from services.pilot.generate import generate
from services.pilot.testing import meshed, plain, proxy_of, snapshot
from shared.model.proxy_config import ProxyConfig, VirtualHost

TD = "cluster.local"
ROOT = "isthmus-system"

CATALOG = [
    meshed("frontend", "10.0.0.1"),
    meshed("reviews", "10.0.1.1", version="v1"),
    meshed("reviews", "10.0.1.2", version="v2"),
    meshed("reviews", "10.0.1.3", version="v3", healthy=False),
    plain("ratings", "10.0.2.1", 8080),
]

REVIEWS_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool: {tcp: {maxConnections: 10}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {simple: RANDOM}}
"""

CANARY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews.default.svc.cluster.local, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
"""


def frontend_config(config: str) -> ProxyConfig:
    snap = snapshot(CATALOG, config)
    return generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)


def vhost(config: ProxyConfig, name: str) -> VirtualHost:
    return next(v for v in config.virtual_hosts if v.name == name)


def test_every_catalog_service_gets_a_virtual_host_with_its_domains() -> None:
    config = frontend_config("")
    assert [v.name for v in config.virtual_hosts] == ["frontend", "ratings", "reviews"]
    assert vhost(config, "reviews").domains == [
        "reviews",
        "reviews.default",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
        "reviews.service.consul",
    ]


def test_without_virtual_service_one_catch_all_route_to_the_default_cluster() -> None:
    routes = vhost(frontend_config(""), "reviews").routes
    assert len(routes) == 1
    assert routes[0].match == []
    assert [(w.cluster, w.weight) for w in routes[0].route] == [("outbound|80||reviews", 100)]


def test_canary_weights_and_header_match_keep_their_order() -> None:
    routes = vhost(frontend_config(CANARY + "---" + REVIEWS_RULE), "reviews").routes
    assert len(routes) == 2
    assert routes[0].match[0].headers["end-user"].exact == "jason"
    assert [(w.cluster, w.weight) for w in routes[0].route] == [("outbound|80|v2|reviews", 100)]
    assert [(w.cluster, w.weight) for w in routes[1].route] == [
        ("outbound|80|v1|reviews", 90),
        ("outbound|80|v2|reviews", 10),
    ]


def test_subset_clusters_hold_instances_by_version_label() -> None:
    config = frontend_config(CANARY + "---" + REVIEWS_RULE)
    clusters = {c.name: c for c in config.clusters}
    assert [e.address for e in clusters["outbound|80|v1|reviews"].endpoints] == ["10.0.1.1"]
    assert [e.address for e in clusters["outbound|80|v2|reviews"].endpoints] == ["10.0.1.2"]
    assert [e.address for e in clusters["outbound|80||reviews"].endpoints] == [
        "10.0.1.1",
        "10.0.1.2",
        "10.0.1.3",
    ]
    assert [e.healthy for e in clusters["outbound|80||reviews"].endpoints] == [True, True, False]


def test_subset_policy_overrides_the_top_level_policy_field_by_field() -> None:
    clusters = {c.name: c for c in frontend_config(CANARY + "---" + REVIEWS_RULE).clusters}
    v2 = clusters["outbound|80|v2|reviews"].traffic_policy
    assert v2 is not None and v2.load_balancer is not None and v2.connection_pool is not None
    assert v2.load_balancer.simple == "RANDOM"
    assert v2.connection_pool.tcp is not None and v2.connection_pool.tcp.max_connections == 10
    v1 = clusters["outbound|80|v1|reviews"].traffic_policy
    assert v1 is not None and v1.load_balancer is not None and v1.load_balancer.simple == "LEAST_REQUEST"


def test_a_subset_no_rule_defines_gives_a_cluster_without_endpoints() -> None:
    clusters = {c.name: c for c in frontend_config(CANARY).clusters}
    assert clusters["outbound|80|v2|reviews"].endpoints == []


def test_meshed_endpoints_carry_spiffe_identity_and_plain_ones_none() -> None:
    clusters = {c.name: c for c in frontend_config("").clusters}
    reviews = clusters["outbound|80||reviews"].endpoints[0]
    assert reviews.identity == "spiffe://cluster.local/ns/default/sa/reviews"
    assert reviews.port == 15006
    ratings = clusters["outbound|80||ratings"].endpoints
    assert [(e.address, e.port, e.identity) for e in ratings] == [("10.0.2.1", 8080, None)]


def test_destination_port_and_short_names_resolve_in_the_virtual_service_namespace() -> None:
    other_ns = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: other}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
"""
    ported = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings.service.consul]
  http:
  - route: [{destination: {host: ratings, port: {number: 9080}}}]
"""
    config = frontend_config(other_ns + "---" + ported)
    assert vhost(config, "reviews").routes[0].name == "default"
    assert vhost(config, "ratings").routes[0].route[0].cluster == "outbound|9080||ratings"
    assert "outbound|9080||ratings" in {c.name for c in config.clusters}


def test_several_virtual_services_merge_in_namespace_name_order() -> None:
    def vs(name: str, path: str) -> str:
        return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [reviews]
  http:
  - match: [{{uri: {{prefix: {path}}}}}]
    route: [{{destination: {{host: reviews}}}}]
"""

    config = frontend_config(vs("zeta", "/z") + "---" + vs("alpha", "/a"))
    prefixes = [route.match[0].uri.prefix for route in vhost(config, "reviews").routes if route.match[0].uri]
    assert prefixes == ["/a", "/z"]


@pytest.mark.parametrize("weights", [(None, None, None), (None,)])
def test_missing_weights_split_one_hundred(weights: tuple[None, ...]) -> None:
    dests = "\n".join("    - destination: {host: reviews}" for _ in weights)
    config = frontend_config(
        f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
{dests}
"""
    )
    assert sum(w.weight for w in vhost(config, "reviews").routes[0].route) == 100


def test_same_snapshot_gives_byte_identical_json_whatever_the_input_order() -> None:
    config = CANARY + "---" + REVIEWS_RULE
    first = snapshot(CATALOG, config)
    second = snapshot(list(reversed(CATALOG)), REVIEWS_RULE + "---" + CANARY)
    one = generate(first, proxy_of(first, "frontend-10.0.0.1"), TD, ROOT).versioned()
    two = generate(second, proxy_of(second, "frontend-10.0.0.1"), TD, ROOT).versioned()
    assert one.to_json() == two.to_json()
    assert one.version == two.version != ""


def test_label_order_in_the_catalog_does_not_change_the_version() -> None:
    forward = snapshot([meshed("frontend", "10.0.0.1"), meshed("reviews", "10.0.1.1", version="v1", team="a")])
    backward = snapshot([meshed("frontend", "10.0.0.1"), meshed("reviews", "10.0.1.1", team="a", version="v1")])
    one = generate(forward, proxy_of(forward, "frontend-10.0.0.1"), TD, ROOT).stamped()
    two = generate(backward, proxy_of(backward, "frontend-10.0.0.1"), TD, ROOT).stamped()
    assert one == two


def test_an_instance_without_a_valid_identity_is_never_an_endpoint() -> None:
    bad = meshed("reviews", "10.0.1.9", namespace="Not_A_Label!")
    snap = snapshot([*CATALOG, bad])
    config = generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)
    reviews = next(c for c in config.clusters if c.name == "outbound|80||reviews")
    assert "10.0.1.9" not in [e.address for e in reviews.endpoints]
    assert len(reviews.endpoints) == 3


def _answering(name: str, host: str, status: int) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: ["{host}"]
  http:
  - directResponse: {{status: {status}}}
"""


def test_a_wildcard_host_covers_the_services_no_host_names_exactly_most_specific_first() -> None:
    config = frontend_config(
        CANARY
        + "---"
        + REVIEWS_RULE
        + "---"
        + _answering("retired", "*.default.svc.cluster.local", 418)
        + "---"
        + _answering("everything", "*", 503)
    )
    assert [r.direct_response.status for r in vhost(config, "ratings").routes if r.direct_response] == [418]
    assert [r.direct_response.status for r in vhost(config, "frontend").routes if r.direct_response] == [418]
    reviews = vhost(config, "reviews").routes
    assert all(r.direct_response is None for r in reviews), "a host naming the service exactly wins"
    assert [(w.cluster, w.weight) for w in reviews[1].route] == [
        ("outbound|80|v1|reviews", 90),
        ("outbound|80|v2|reviews", 10),
    ]


def test_a_bare_star_host_covers_every_service() -> None:
    config = frontend_config(_answering("everything", "*", 503))
    for name in ("frontend", "ratings", "reviews"):
        assert [r.direct_response.status for r in vhost(config, name).routes if r.direct_response] == [503]
