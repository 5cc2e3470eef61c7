"""AuthorizationPolicy evaluation: DENY before ALLOW, no ALLOW = allow, ALLOW without rules = nothing, fail closed."""

from __future__ import annotations

from typing import Any

from services.proxy.authz import Authorizer, RequestFacts, value_matches
from shared.model.proxy_config import NamedAuthorizationPolicy

PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/productpage"
RATINGS = "spiffe://cluster.local/ns/other/sa/ratings"


def _facts(peer: str = PRODUCTPAGE, method: str = "GET", path: str = "/") -> RequestFacts:
    return RequestFacts(peer, "127.0.0.1", method, path, "reviews", 15006, {"x-user": "jason"})


def _policy(action: str, rules: list[dict[str, Any]], name: str = "p") -> NamedAuthorizationPolicy:
    return NamedAuthorizationPolicy.model_validate(
        {"name": name, "namespace": "default", "spec": {"action": action, "rules": rules}}
    )


def test_no_policies_allows() -> None:
    assert Authorizer([]).allowed(_facts())[0]


def test_allow_without_rules_allows_nothing() -> None:
    assert not Authorizer([_policy("ALLOW", [])]).allowed(_facts())[0]


def test_allow_by_principal_and_method() -> None:
    policy = _policy(
        "ALLOW",
        [
            {
                "from": [{"source": {"principals": ["cluster.local/ns/default/sa/productpage"]}}],
                "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*"]}}],
            }
        ],
    )
    authorizer = Authorizer([policy])
    assert authorizer.allowed(_facts(path="/api/items?x=1"))[0]
    assert not authorizer.allowed(_facts(method="POST", path="/api/items"))[0]
    assert not authorizer.allowed(_facts(peer=RATINGS, path="/api/items"))[0]


def test_deny_wins_over_allow() -> None:
    allow_all = _policy("ALLOW", [{}], "allow-all")
    deny_other_ns = _policy("DENY", [{"from": [{"source": {"notNamespaces": ["default"]}}]}], "deny")
    authorizer = Authorizer([allow_all, deny_other_ns])
    assert authorizer.allowed(_facts())[0]
    allowed, reason = authorizer.allowed(_facts(peer=RATINGS))
    assert not allowed and reason == "default/deny"


def test_unsupported_field_fails_closed() -> None:
    deny_jwt = _policy("DENY", [{"from": [{"source": {"requestPrincipals": ["*"]}}]}])
    assert not Authorizer([deny_jwt]).allowed(_facts())[0]
    allow_jwt = _policy("ALLOW", [{"from": [{"source": {"requestPrincipals": ["*"]}}]}])
    assert not Authorizer([allow_jwt]).allowed(_facts())[0]


def test_conditions_on_headers() -> None:
    policy = _policy("ALLOW", [{"when": [{"key": "request.headers[X-User]", "values": ["jason"]}]}])
    assert Authorizer([policy]).allowed(_facts())[0]
    other = _policy("ALLOW", [{"when": [{"key": "request.headers[x-user]", "notValues": ["jason"]}]}])
    assert not Authorizer([other]).allowed(_facts())[0]


def test_custom_without_provider_denies_matching_requests() -> None:
    custom = NamedAuthorizationPolicy.model_validate(
        {
            "name": "ext",
            "namespace": "default",
            "spec": {"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [{}]},
        }
    )
    assert not Authorizer([custom]).allowed(_facts())[0]


def test_value_patterns() -> None:
    assert value_matches("*", "x")
    assert value_matches("/api/*", "/api/v1")
    assert value_matches("*.local", "a.local")
    assert not value_matches("/api", "/api/v1")
    assert not value_matches("*", None)
