"""Delegation simulation: a root VirtualService's delegating route -> the merged routes a proxy gets, and where
the proxy's router then sends requests."""

from __future__ import annotations

import logging
import random

import pytest

from services.pilot.generate import generate
from services.pilot.reuse import Reuse
from services.pilot.snapshot import Snapshot
from services.pilot.testing import meshed, proxy_of, resources, snapshot
from services.proxy.router import RouteTable
from shared.model.proxy_config import ProxyConfig, Route

TD = "cluster.local"
ROOT = "isthmus-system"

CATALOG = [
    meshed("frontend", "10.0.0.1"),
    meshed("reviews", "10.0.1.1", namespace="shop", version="v1"),
    meshed("reviews", "10.0.1.2", namespace="shop", version="v2"),
    meshed("ratings", "10.0.2.1", namespace="team"),
]

V1 = "outbound|80|v1|reviews"
V2 = "outbound|80|v2|reviews"
ANY = "outbound|80||reviews"

RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
"""


def root(delegating: str, namespace: str = "shop") -> str:
    """A root VirtualService for reviews: `delegating` (one http route, indented as a list item) first, then a
    catch-all to every reviews instance."""
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: {namespace}}}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  http:
{delegating}
  - name: rest
    route: [{{destination: {{host: reviews.shop}}}}]
---
"""


def delegate(routes: str, name: str = "reviews-api", namespace: str = "shop") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  http:
{routes}
---
"""


API = """
  - name: api
    match: [{uri: {prefix: /api}}]
    delegate: {name: reviews-api}
"""
VERSIONS = """
  - name: v1
    match: [{uri: {prefix: /api/v1}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - name: v2
    match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: reviews, subset: v2}}]
"""


def frontend_config(config: str, snap: Snapshot | None = None) -> ProxyConfig:
    snap = snap or snapshot(CATALOG, config)
    return generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)


def reviews_routes(config: str) -> list[Route]:
    return next(v for v in frontend_config(config).virtual_hosts if v.name == "reviews").routes


def summary(routes: list[Route]) -> list[tuple[str | None, list[str | None], list[str]]]:
    """(name, uri prefixes of the match blocks, clusters) per route."""
    return [
        (
            route.name,
            [block.uri.prefix if block.uri else None for block in route.match],
            [weighted.cluster for weighted in route.route],
        )
        for route in routes
    ]


def test_delegate_routes_replace_the_delegating_route_with_merged_matches() -> None:
    routes = reviews_routes(RULE + root(API) + delegate(VERSIONS))
    assert summary(routes) == [
        ("api-v1", ["/api/v1"], [V1]),
        ("api-v2", ["/api/v2"], [V2]),
        ("rest", [], [ANY]),
    ]


def test_the_router_sends_requests_by_the_merged_matches() -> None:
    config = frontend_config(RULE + root(API) + delegate(VERSIONS))
    table = RouteTable.build(config, random.Random(1))

    def cluster(path: str) -> str | None:
        decision = table.decide("GET", "reviews.shop", path, {})
        return decision.destination.cluster if decision.destination else None

    assert cluster("/api/v1/books") == V1
    assert cluster("/api/v2") == V2
    assert cluster("/api/v3") == ANY  # within the root's /api, but no delegate route: the root's next route
    assert cluster("/web") == ANY


def test_the_root_match_applies_to_delegate_routes_without_uri() -> None:
    delegating = """
  - name: api
    match: [{uri: {prefix: /api}}, {uri: {prefix: /v2/api}}]
    delegate: {name: reviews-api}
"""
    by_user = """
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"""
    routes = reviews_routes(RULE + root(delegating) + delegate(by_user))
    assert summary(routes) == [
        ("api", ["/api", "/v2/api"], [V2]),
        ("api", ["/api", "/v2/api"], [V1]),
        ("rest", [], [ANY]),
    ]
    assert all(block.headers["end-user"].exact == "jason" for block in routes[0].match)
    table = RouteTable.build(frontend_config(RULE + root(delegating) + delegate(by_user)), random.Random(1))
    jason = table.decide("GET", "reviews.shop", "/v2/api/x", {"end-user": "jason"}).destination
    assert jason is not None and jason.cluster == V2
    other = table.decide("GET", "reviews.shop", "/api", {"end-user": "ann"}).destination
    assert other is not None and other.cluster == V1
    outside = table.decide("GET", "reviews.shop", "/web", {"end-user": "jason"}).destination
    assert outside is not None and outside.cluster == ANY


@pytest.mark.parametrize(
    ("root_match", "delegate_match"),
    [
        ("{uri: {prefix: /api}}", "{uri: {prefix: /web}}"),  # not within the root's prefix
        ("{uri: {prefix: /api/v1}}", "{uri: {prefix: /api}}"),  # wider than the root's prefix
        ("{uri: {exact: /api}}", "{uri: {prefix: /api}}"),  # a prefix under an exact root
        ("{method: {exact: GET}}", "{method: {exact: POST}}"),
        ("{uri: {regex: '/api.*'}}", "{uri: {prefix: /api}}"),  # regexes never merge
        ("{headers: {x-team: {exact: a}}}", "{headers: {x-team: {exact: b}}}"),
        ("{port: 80}", "{port: 8080}"),
        ("{uri: {prefix: /api}}", "{uri: {prefix: /api}, ignoreUriCase: true}"),
        ("{sourceNamespace: default}", "{sourceNamespace: team}"),
    ],
)
def test_a_delegate_route_whose_match_conflicts_is_dropped(root_match: str, delegate_match: str) -> None:
    delegating = f"""
  - name: api
    match: [{root_match}]
    delegate: {{name: reviews-api}}
"""
    routes = f"""
  - name: conflicting
    match: [{delegate_match}]
    route: [{{destination: {{host: reviews, subset: v2}}}}]
  - name: fine
    route: [{{destination: {{host: reviews, subset: v1}}}}]
"""
    assert [route.name for route in reviews_routes(RULE + root(delegating) + delegate(routes))] == [
        "api-fine",
        "rest",
    ]


def test_a_delegate_block_outside_every_root_block_drops_the_whole_route() -> None:
    """Istio's mergeHTTPMatchRequests: each delegate block must fit some root block, else the route is dropped."""
    delegating = """
  - match: [{uri: {prefix: /api}}, {uri: {prefix: /v2}}]
    delegate: {name: reviews-api}
"""
    routes = """
  - name: mixed
    match: [{uri: {prefix: /api/books}}, {uri: {prefix: /web}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: within
    match: [{uri: {prefix: /v2/books}}, {uri: {exact: /api/x}}]
    route: [{destination: {host: reviews, subset: v1}}]
"""
    merged = reviews_routes(RULE + root(delegating) + delegate(routes))
    assert summary(merged) == [("within", ["/v2/books", None], [V1]), ("rest", [], [ANY])]
    assert merged[0].match[1].uri is not None and merged[0].match[1].uri.exact == "/api/x"


def test_a_delegate_in_another_namespace_resolves_its_short_hosts_there() -> None:
    delegating = """
  - match: [{uri: {prefix: /ratings}}]
    delegate: {name: ratings-routes, namespace: team}
"""
    routes = """
  - route: [{destination: {host: ratings}}]
    mirror: {host: ratings}
"""
    config = frontend_config(root(delegating) + delegate(routes, name="ratings-routes", namespace="team"))
    merged = next(v for v in config.virtual_hosts if v.name == "reviews").routes[0]
    # `ratings` is ratings.team (a catalog service), not ratings.shop (which would stay an unknown host)
    assert [w.cluster for w in merged.route] == ["outbound|80||ratings"]
    assert [m.cluster for m in merged.mirrors] == ["outbound|80||ratings"]
    assert "outbound|80||ratings" in {cluster.name for cluster in config.clusters}


def test_an_inherited_root_mirror_resolves_in_the_root_namespace() -> None:
    delegating = """
  - match: [{uri: {prefix: /ratings}}]
    mirror: {host: reviews}
    delegate: {name: ratings-routes, namespace: team}
"""
    routes = """
  - route: [{destination: {host: ratings}}]
"""
    config = frontend_config(root(delegating) + delegate(routes, name="ratings-routes", namespace="team"))
    merged = next(v for v in config.virtual_hosts if v.name == "reviews").routes[0]
    assert [m.cluster for m in merged.mirrors] == [ANY]  # reviews.shop, the root's namespace


def test_the_delegate_namespace_defaults_to_the_root_namespace(caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = delegate(VERSIONS, namespace="team")  # same name, other namespace: not the one meant
    with caplog.at_level(logging.WARNING, logger="services.pilot.generate.delegate"):
        routes = reviews_routes(RULE + root(API) + elsewhere)
    assert summary(routes) == [("rest", [], [ANY])]
    assert "delegate VirtualService shop/reviews-api does not exist" in caplog.text


def test_a_missing_delegate_drops_only_the_delegating_route(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="services.pilot.generate.delegate"):
        routes = reviews_routes(RULE + root(API))
    assert summary(routes) == [("rest", [], [ANY])]
    assert "VirtualService shop/reviews route api: delegate VirtualService shop/reviews-api does not exist" in (
        caplog.text
    )


def test_a_delegate_alone_routes_nothing() -> None:
    routes = reviews_routes(RULE + delegate(VERSIONS))
    assert summary(routes) == [("default", [], [ANY])]


def test_a_virtual_service_with_hosts_is_no_delegate(caplog: pytest.LogCaptureFixture) -> None:
    with_hosts = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-api, namespace: shop}
spec:
  hosts: [ratings.team]
  http:
  - route: [{destination: {host: reviews, subset: v2}}]
---
"""
    with caplog.at_level(logging.WARNING, logger="services.pilot.generate.delegate"):
        routes = reviews_routes(RULE + root(API) + with_hosts)
    assert summary(routes) == [("rest", [], [ANY])]
    assert "has hosts, so it is not a delegate" in caplog.text


def test_root_fields_apply_where_the_delegate_sets_none() -> None:
    """Istio's mergeHTTPRoute: the delegate's own timeout, retries, headers... win; the root's fill the rest."""
    delegating = """
  - name: api
    match: [{uri: {prefix: /api}}]
    timeout: 5s
    retries: {attempts: 3, perTryTimeout: 1s}
    headers: {request: {set: {x-root: "1"}}}
    fault: {abort: {httpStatus: 503, percentage: {value: 1}}}
    delegate: {name: reviews-api}
"""
    routes = """
  - name: own
    match: [{uri: {prefix: /api/v1}}]
    timeout: 1s
    headers: {request: {set: {x-delegate: "1"}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - name: inherits
    route: [{destination: {host: reviews, subset: v2}}]
"""
    own, inherits, _ = reviews_routes(RULE + root(delegating) + delegate(routes))
    assert (own.name, own.timeout, inherits.name, inherits.timeout) == ("api-own", 1.0, "api-inherits", 5.0)
    assert own.retries == inherits.retries and own.retries is not None and own.retries.attempts == 3
    assert own.headers is not None and own.headers.request is not None
    assert own.headers.request.set == {"x-delegate": "1"}  # replaced as a whole, not joined
    assert inherits.headers is not None and inherits.headers.request is not None
    assert inherits.headers.request.set == {"x-root": "1"}
    assert own.fault == inherits.fault and own.fault is not None
    assert [block.uri.prefix if block.uri else None for block in inherits.match] == ["/api"]


def test_a_delegate_change_reaches_the_config_through_reuse() -> None:
    """The root is unchanged, so only the delegate in the reuse inputs tells the virtual host to be rebuilt."""
    reuse = Reuse()
    before = RULE + root(API) + delegate(VERSIONS)
    after = RULE + root(API) + delegate(VERSIONS.replace("subset: v1", "subset: v2"))
    first = frontend_config(before, Snapshot.build(resources(before), CATALOG, reuse))
    changed = frontend_config(after, Snapshot.build(resources(after), CATALOG, reuse))
    fresh = frontend_config(after)
    assert summary(next(v for v in first.virtual_hosts if v.name == "reviews").routes)[0][2] == [V1]
    assert changed.stamped() == fresh.stamped()
    assert summary(next(v for v in changed.virtual_hosts if v.name == "reviews").routes)[0][2] == [V2]
    removed = RULE + root(API)
    gone = frontend_config(removed, Snapshot.build(resources(removed), CATALOG, reuse))
    assert gone.stamped() == frontend_config(removed).stamped()
    assert reuse.hits > 0


def test_a_delegate_redirect_inherits_no_root_rewrite() -> None:
    delegating = """
  - match: [{uri: {prefix: /api}}]
    rewrite: {uri: /v1}
    delegate: {name: reviews-api}
"""
    routes = """
  - match: [{uri: {prefix: /api/old}}]
    redirect: {uri: /api/new}
  - route: [{destination: {host: reviews, subset: v1}}]
"""
    redirect, rewritten, _ = reviews_routes(RULE + root(delegating) + delegate(routes))
    assert redirect.redirect is not None and redirect.rewrite is None
    assert rewritten.rewrite is not None and rewritten.rewrite.uri == "/v1"
