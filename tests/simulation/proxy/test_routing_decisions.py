"""Config + request -> decision for the proxy's router: no sockets, seeded randomness."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from services.proxy.balancer import Balancers
from services.proxy.errors import NoHealthyUpstream, NoRoute
from services.proxy.router import RouteTable, strip_port
from shared.model.proxy_config import ProxyConfig, cluster_name

V1 = cluster_name("reviews.default.svc", 9080, "v1")
V2 = cluster_name("reviews.default.svc", 9080, "v2")
V3 = cluster_name("reviews.default.svc", 9080, "v3")


def _config(routes: list[dict[str, Any]], domains: list[str] | None = None) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "proxyId": "productpage-default-node-15006",
            "service": "productpage",
            "namespace": "default",
            "virtualHosts": [
                {
                    "name": "reviews.default.svc:9080",
                    "domains": domains or ["reviews", "reviews.default.svc", "reviews:9080"],
                    "routes": routes,
                }
            ],
            "clusters": [
                {"name": name, "host": "reviews.default.svc", "port": 9080, "subset": subset}
                for name, subset in ((V1, "v1"), (V2, "v2"), (V3, "v3"))
            ],
        }
    )


def _table(routes: list[dict[str, Any]], seed: int = 7, **kwargs: Any) -> RouteTable:
    return RouteTable.build(_config(routes, **kwargs), random.Random(seed))


def test_weights_split_within_three_sigma() -> None:
    table = _table([{"route": [{"cluster": V1, "weight": 75}, {"cluster": V2, "weight": 25}]}])
    n = 1000
    hits = sum(table.decide("GET", "reviews", "/", {}).cluster == V2 for _ in range(n))
    sigma = math.sqrt(n * 0.25 * 0.75)
    assert abs(hits - n * 0.25) <= 3 * sigma, hits


def test_weights_are_relative_not_percentages() -> None:
    table = _table([{"route": [{"cluster": V1, "weight": 1}, {"cluster": V2, "weight": 3}]}])
    n = 1000
    hits = sum(table.decide("GET", "reviews", "/", {}).cluster == V2 for _ in range(n))
    assert abs(hits - 750) <= 3 * math.sqrt(n * 0.75 * 0.25), hits


def test_zero_weight_destination_never_chosen() -> None:
    table = _table([{"route": [{"cluster": V1, "weight": 0}, {"cluster": V2, "weight": 5}]}])
    assert {table.decide("GET", "reviews", "/", {}).cluster for _ in range(200)} == {V2}


def test_header_match_wins_over_later_catch_all() -> None:
    table = _table(
        [
            {"match": [{"headers": {"End-User": {"exact": "jason"}}}], "route": [{"cluster": V2}]},
            {"route": [{"cluster": V1}]},
        ]
    )
    assert table.decide("GET", "reviews", "/", {"end-user": "jason"}).cluster == V2
    assert table.decide("GET", "reviews", "/", {"End-User": "jason"}).cluster == V2
    assert table.decide("GET", "reviews", "/", {"end-user": "other"}).cluster == V1
    assert table.decide("GET", "reviews", "/", {}).cluster == V1


def test_first_match_wins() -> None:
    table = _table(
        [
            {"name": "a", "match": [{"uri": {"prefix": "/api"}}], "route": [{"cluster": V1}]},
            {"name": "b", "match": [{"uri": {"prefix": "/api/v2"}}], "route": [{"cluster": V2}]},
            {"name": "c", "route": [{"cluster": V3}]},
        ]
    )
    assert table.decide("GET", "reviews", "/api/v2/items", {}).route.name == "a"
    assert table.decide("GET", "reviews", "/other", {}).route.name == "c"


def test_match_blocks_are_ored_and_conditions_anded() -> None:
    table = _table(
        [
            {
                "match": [
                    {"uri": {"exact": "/a"}, "method": {"exact": "POST"}},
                    {"queryParams": {"debug": {"exact": "1"}}},
                ],
                "route": [{"cluster": V2}],
            },
            {"route": [{"cluster": V1}]},
        ]
    )
    assert table.decide("POST", "reviews", "/a", {}).cluster == V2
    assert table.decide("GET", "reviews", "/a", {}).cluster == V1  # one condition of the block fails
    assert table.decide("GET", "reviews", "/b?debug=1", {}).cluster == V2  # the other block matches


def test_without_headers_and_authority_and_regex() -> None:
    table = _table(
        [
            {"match": [{"withoutHeaders": {"x-canary": {"exact": "off"}}}], "route": [{"cluster": V2}]},
            {"route": [{"cluster": V1}]},
        ]
    )
    assert table.decide("GET", "reviews", "/", {}).cluster == V2
    assert table.decide("GET", "reviews", "/", {"x-canary": "off"}).cluster == V1
    regex = _table(
        [
            {"match": [{"uri": {"regex": "/items/[0-9]+"}}], "route": [{"cluster": V3}]},
            {"match": [{"authority": {"prefix": "reviews.default"}}], "route": [{"cluster": V2}]},
        ]
    )
    assert regex.decide("GET", "reviews", "/items/42", {}).cluster == V3
    assert regex.decide("GET", "reviews.default.svc", "/x", {}).cluster == V2
    with pytest.raises(NoRoute):
        regex.decide("GET", "reviews", "/items/abc", {})


def test_host_is_lowercased_and_port_stripped() -> None:
    table = _table([{"route": [{"cluster": V1}]}])
    assert table.decide("GET", "Reviews.Default.SVC:9080", "/", {}).cluster == V1
    assert strip_port("[::1]:80") == "[::1]"
    assert strip_port("example.com") == "example.com"


def test_unknown_host_is_no_route_with_404_nr() -> None:
    table = _table([{"route": [{"cluster": V1}]}])
    with pytest.raises(NoRoute) as caught:
        table.decide("GET", "ratings", "/", {})
    assert caught.value.status == 404 and caught.value.flag == "NR"


def test_no_matching_route_is_no_route() -> None:
    table = _table([{"match": [{"uri": {"exact": "/only"}}], "route": [{"cluster": V1}]}])
    with pytest.raises(NoRoute, match="no route"):
        table.decide("GET", "reviews", "/other", {})


def test_prefix_rewrite_keeps_query() -> None:
    table = _table([{"match": [{"uri": {"prefix": "/old"}}], "rewrite": {"uri": "/new"}, "route": [{"cluster": V1}]}])
    decision = table.decide("GET", "reviews", "/old/page?x=1", {})
    assert decision.path == "/new/page?x=1"


def test_wildcard_domain() -> None:
    table = _table([{"route": [{"cluster": V1}]}], domains=["*.example.com"])
    assert table.decide("GET", "api.example.com", "/", {}).cluster == V1
    with pytest.raises(NoRoute):
        table.decide("GET", "example.org", "/", {})


def test_route_to_undefined_cluster_is_rejected_at_build() -> None:
    with pytest.raises(ValueError, match="not defined"):
        _table([{"route": [{"cluster": "outbound|1||nowhere"}]}])


def test_cluster_without_healthy_endpoint_is_uh() -> None:
    config = _config([{"route": [{"cluster": V1}]}])
    with pytest.raises(NoHealthyUpstream) as caught:
        Balancers(config.clusters).pick(V1)
    assert caught.value.status == 503 and caught.value.flag == "UH"
