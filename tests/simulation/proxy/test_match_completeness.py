"""VirtualService match conditions and self-answering routes, config + request -> decision, no sockets."""

from __future__ import annotations

import random
from typing import Any

import pytest

from services.proxy.errors import NoRoute
from services.proxy.router import RouteTable
from shared.model.proxy_config import ProxyConfig, cluster_name

V1 = cluster_name("reviews.default.svc", 9080, "v1")
V2 = cluster_name("reviews.default.svc", 9080, "v2")
SHADOW = cluster_name("reviews.default.svc", 9080, "shadow")


def _table(routes: list[dict[str, Any]]) -> RouteTable:
    config = ProxyConfig.model_validate(
        {
            "proxyId": "p",
            "service": "productpage",
            "namespace": "default",
            "virtualHosts": [{"name": "reviews", "domains": ["reviews", "reviews:9080"], "routes": routes}],
            "clusters": [{"name": name, "host": "reviews.default.svc", "port": 9080} for name in (V1, V2, SHADOW)],
        }
    )
    return RouteTable.build(config, random.Random(1))


def _first_then_fallback(match: dict[str, Any]) -> RouteTable:
    return _table([{"match": [match], "route": [{"cluster": V2}]}, {"route": [{"cluster": V1}]}])


def _picks(table: RouteTable, method: str = "GET", host: str = "reviews", path: str = "/", **headers: str) -> str:
    port = int(host.rpartition(":")[2]) if ":" in host else None
    return table.decide(method, host, path, {k.replace("_", "-"): v for k, v in headers.items()}, port).cluster


@pytest.mark.parametrize(
    ("match", "hit", "miss"),
    [
        ({"uri": {"exact": "/a"}}, {"path": "/a?x=1"}, {"path": "/a/b"}),
        ({"uri": {"prefix": "/api"}}, {"path": "/api/v1"}, {"path": "/ap"}),
        ({"uri": {"regex": r"/item/\d+"}}, {"path": "/item/42"}, {"path": "/item/x"}),
        ({"uri": {"exact": "/Cart"}, "ignoreUriCase": True}, {"path": "/cART"}, {"path": "/carts"}),
        ({"method": {"exact": "POST"}}, {"method": "POST"}, {"method": "GET"}),
        ({"authority": {"prefix": "reviews:"}}, {"host": "reviews:9080"}, {"host": "reviews"}),
        ({"scheme": {"exact": "http"}}, {}, None),
        ({"port": 9080}, {"host": "reviews:9080"}, {"host": "reviews"}),
        ({"port": 80}, {"host": "reviews"}, {"host": "reviews:9080"}),
        ({"headers": {"x-user": {"exact": "jason"}}}, {"x_user": "jason"}, {"x_user": "jasonx"}),
        ({"headers": {"x-user": {"prefix": "ja"}}}, {"x_user": "jay"}, {"x_user": "bob"}),
        ({"headers": {"x-user": {"regex": "j.*n"}}}, {"x_user": "jason"}, {"x_user": "jasonx"}),
        ({"headers": {"x-canary": {}}}, {"x_canary": ""}, {}),
        ({"withoutHeaders": {"x-canary": {}}}, {}, {"x_canary": "1"}),
        ({"withoutHeaders": {"x-user": {"exact": "bob"}}}, {"x_user": "alice"}, {"x_user": "bob"}),
        ({"queryParams": {"debug": {"exact": "1"}}}, {"path": "/?debug=1"}, {"path": "/?debug=2"}),
        ({"queryParams": {"debug": {}}}, {"path": "/?debug"}, {"path": "/?other=1"}),
    ],
)
def test_each_condition_matches_and_misses(
    match: dict[str, Any], hit: dict[str, str], miss: dict[str, str] | None
) -> None:
    table = _first_then_fallback(match)
    assert _picks(table, **hit) == V2
    if miss is not None:
        assert _picks(table, **miss) == V1


def test_conditions_in_one_block_are_anded_blocks_ored() -> None:
    table = _table(
        [
            {
                "match": [
                    {"method": {"exact": "POST"}, "uri": {"prefix": "/cart"}},
                    {"headers": {"x-user": {"exact": "jason"}}},
                ],
                "route": [{"cluster": V2}],
            },
            {"route": [{"cluster": V1}]},
        ]
    )
    assert _picks(table, "POST", path="/cart/1") == V2
    assert _picks(table, "GET", path="/cart/1") == V1
    assert _picks(table, "GET", path="/", x_user="jason") == V2


def test_redirect_and_direct_response_routes_have_no_destination() -> None:
    table = _table(
        [
            {"match": [{"uri": {"prefix": "/old"}}], "redirect": {"uri": "/new", "redirectCode": 308}},
            {"match": [{"uri": {"prefix": "/down"}}], "directResponse": {"status": 503, "body": {"string": "later"}}},
            {"route": [{"cluster": V1}]},
        ]
    )
    redirect = table.decide("GET", "reviews", "/old/x", {})
    assert redirect.destination is None and redirect.cluster == ""
    assert redirect.route.redirect is not None and redirect.route.redirect.redirect_code == 308
    direct = table.decide("GET", "reviews", "/down", {})
    assert direct.route.direct_response is not None and direct.route.direct_response.status == 503


def test_mirror_cluster_must_exist_and_cors_is_compiled() -> None:
    table = _table(
        [
            {
                "route": [{"cluster": V1}],
                "mirrors": [{"cluster": SHADOW}],
                "corsPolicy": {"allowOrigins": [{"exact": "*"}]},
            }
        ]
    )
    decision = table.decide("GET", "reviews", "/", {})
    assert decision.cors is not None and decision.cors.allowed("https://x")
    with pytest.raises(ValueError, match="not defined"):
        _table([{"route": [{"cluster": V1}], "mirrors": [{"cluster": "outbound|1||nowhere"}]}])


def test_route_with_nothing_to_do_is_rejected_at_build() -> None:
    with pytest.raises(ValueError, match="no destination, redirect or directResponse"):
        _table([{"route": []}])


def test_no_match_is_nr() -> None:
    table = _table([{"match": [{"uri": {"exact": "/only"}}], "route": [{"cluster": V1}]}])
    with pytest.raises(NoRoute):
        table.decide("GET", "reviews", "/other", {})


def test_uri_regex_rewrite_replaces_every_match_and_keeps_the_query() -> None:
    table = _table(
        [
            {
                "match": [{"uri": {"prefix": "/v1/"}}],
                "rewrite": {"uriRegexRewrite": {"match": r"^/v1/(\w+)/(\d+)", "rewrite": r"/api/\2/\1"}},
                "route": [{"cluster": V1}],
            },
            {"rewrite": {"uriRegexRewrite": {"match": "o", "rewrite": "0"}}, "route": [{"cluster": V2}]},
        ]
    )
    assert table.decide("GET", "reviews", "/v1/items/42?x=1", {}).path == "/api/42/items?x=1"
    assert table.decide("GET", "reviews", "/foo/boo", {}).path == "/f00/b00"
