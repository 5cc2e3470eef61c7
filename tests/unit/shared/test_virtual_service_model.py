"""VirtualService model: redirect, directResponse, CORS, mirror fields with Istio names and their validation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.model.virtual_service import (
    HTTPRoute,
    L4MatchAttributes,
    PresentOrStringMatch,
    TLSRoute,
    names_source,
    source_meets,
)

DEST = [{"destination": {"host": "reviews"}}]


def _route(**raw: Any) -> HTTPRoute:
    return HTTPRoute.model_validate(raw)


def _error(**raw: Any) -> str:
    with pytest.raises(ValidationError) as info:
        _route(**raw)
    return str(info.value)


def test_exactly_one_of_route_redirect_direct_response() -> None:
    assert "at least one destination is required" in _error()
    assert "route and redirect are mutually exclusive" in _error(route=DEST, redirect={"uri": "/x"})
    assert "redirect and directResponse" in _error(redirect={"uri": "/x"}, directResponse={"status": 200})
    assert _route(redirect={"uri": "/x"}).redirect is not None
    assert _route(directResponse={"status": 204}).direct_response is not None


def test_redirect_fields() -> None:
    redirect = _route(redirect={"authority": "a", "port": 8080, "scheme": "https", "redirectCode": 302}).redirect
    assert redirect is not None and (redirect.redirect_code, redirect.port) == (302, 8080)
    assert _route(redirect={"uri": "/x"}).redirect.redirect_code == 301  # type: ignore[union-attr]
    assert "redirectCode: 200" in _error(redirect={"redirectCode": 200})
    assert "port or derivePort" in _error(redirect={"port": 1, "derivePort": "FROM_REQUEST_PORT"})
    assert "must start with '/'" in _error(redirect={"uri": "x"})
    assert "rewrite and redirect" in _error(redirect={"uri": "/x"}, rewrite={"uri": "/y"})


def test_direct_response_status_range_and_body() -> None:
    assert "directResponse.status" in _error(directResponse={"status": 600}).replace("\n", ".")
    assert "greater than or equal to 200" in _error(directResponse={"status": 100})
    assert "exactly one of string or bytes" in _error(directResponse={"status": 200, "body": {}})
    assert "not valid base64" in _error(directResponse={"status": 200, "body": {"bytes": "***"}})


def test_mirror_forms() -> None:
    route = _route(route=DEST, mirror={"host": "shadow"}, mirrorPercentage={"value": 5})
    [policy] = route.mirror_policies()
    assert policy.destination.host == "shadow" and policy.percentage is not None and policy.percentage.value == 5
    many = _route(route=DEST, mirrors=[{"destination": {"host": "a"}}, {"destination": {"host": "b"}}])
    assert [m.destination.host for m in many.mirror_policies()] == ["a", "b"]
    assert "mirrorPercentage: needs mirror" in _error(route=DEST, mirrorPercentage={"value": 5})
    assert "either mirror" in _error(route=DEST, mirror={"host": "a"}, mirrors=[{"destination": {"host": "b"}}])
    assert "percentage must be between 0 and 100" in _error(
        route=DEST, mirror={"host": "a"}, mirrorPercentage={"value": 101}
    )


def test_cors_policy_fields() -> None:
    cors = _route(
        route=DEST,
        corsPolicy={
            "allowOrigins": [{"exact": "https://a"}, {"regex": "https://.*"}],
            "allowMethods": ["GET"],
            "allowHeaders": ["x"],
            "exposeHeaders": ["y"],
            "maxAge": "1h",
            "allowCredentials": True,
        },
    ).cors_policy
    assert cors is not None and cors.max_age == 3600.0 and cors.allow_credentials
    assert "exactly one of exact, prefix or regex" in _error(route=DEST, corsPolicy={"allowOrigins": [{}]})


def test_empty_string_match_means_present_only_where_allowed() -> None:
    match = PresentOrStringMatch()
    assert match.presence_only and match.matches("") and not match.matches(None)
    assert PresentOrStringMatch(prefix="a").matches("ab")
    ok = _route(route=DEST, match=[{"headers": {"X-A": {}}, "withoutHeaders": {"x-b": {}}, "queryParams": {"q": {}}}])
    assert "x-a" in ok.match[0].headers
    assert "exactly one of exact, prefix or regex" in _error(route=DEST, match=[{"uri": {}}])
    assert "does not compile" in _error(route=DEST, match=[{"headers": {"x": {"regex": "("}}}])
    assert "exactly one of exact, prefix or regex" in _error(
        route=DEST, match=[{"headers": {"x": {"exact": "a", "prefix": "b"}}}]
    )


def test_destination_rule_ring_size_forms_are_exclusive() -> None:
    from shared.model.destination_rule import ConsistentHashLB

    assert ConsistentHashLB.model_validate({"useSourceIp": True, "minimumRingSize": 64}).ring_size() == 64
    with pytest.raises(ValidationError, match="at most one of minimumRingSize, ringHash or maglev"):
        ConsistentHashLB.model_validate({"useSourceIp": True, "ringHash": {}, "maglev": {}})


def test_uri_regex_rewrite_validation() -> None:
    assert "either uri or uriRegexRewrite" in _error(
        route=DEST, rewrite={"uri": "/a", "uriRegexRewrite": {"match": "a", "rewrite": "b"}}
    )
    assert "does not compile" in _error(route=DEST, rewrite={"uriRegexRewrite": {"match": "(", "rewrite": "b"}})


def test_source_namespace_on_http_and_tcp_matches() -> None:
    route = _route(route=DEST, match=[{"sourceNamespace": "shop", "sourceLabels": {"app": "web"}}])
    assert (route.match[0].source_namespace, route.match[0].source_labels) == ("shop", {"app": "web"})
    tcp = L4MatchAttributes.model_validate({"port": 5432, "sourceNamespace": "billing"})
    assert tcp.source_namespace == "billing"
    assert "match.0.sourceNamespace" in _error(route=DEST, match=[{"sourceNamespace": ""}])


def test_a_block_without_source_conditions_meets_every_caller() -> None:
    plain = _route(route=DEST, match=[{"port": 80}]).match[0]
    scoped = _route(route=DEST, match=[{"sourceNamespace": "shop", "sourceLabels": {"app": "web"}}]).match[0]
    assert not names_source(plain) and source_meets(plain, {}, "anywhere")
    assert names_source(scoped)
    assert source_meets(scoped, {"app": "web", "version": "v2"}, "shop")
    assert not source_meets(scoped, {"app": "web"}, "staging")
    assert not source_meets(scoped, {"app": "api"}, "shop")


def test_tls_routes_match_sni_names_and_refuse_what_gateways_cannot_see() -> None:
    route = TLSRoute.model_validate(
        {"match": [{"sniHosts": ["Shop.Example.com", "*.example.org"]}], "route": [{"destination": {"host": "a"}}]}
    )
    assert route.match[0].sni_hosts == ["shop.example.com", "*.example.org"]
    for block, words in (
        ({"sniHosts": []}, "at least 1"),
        ({"sniHosts": ["a*.example.com"]}, "leading '*.' wildcard"),
        ({"sniHosts": ["a.example.com"], "destinationSubnets": ["10.0.0.0/8"]}, "match by SNI, port and gateways"),
    ):
        with pytest.raises(ValidationError) as refused:
            TLSRoute.model_validate({"match": [block], "route": [{"destination": {"host": "a"}}]})
        assert words in str(refused.value)


def test_tcp_destination_subnets_are_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError) as refused:
        L4MatchAttributes.model_validate({"port": 5432, "destinationSubnets": ["10.0.0.0/8"]})
    assert "destinationSubnets" in str(refused.value) and "does not capture traffic" in str(refused.value)
