"""AuthorizationPolicy evaluation: DENY before ALLOW, no ALLOW = allow, ALLOW without rules = nothing, fail closed."""

from __future__ import annotations

from typing import Any

from services.proxy.authz import Authorizer, CustomCheck, RequestFacts, value_matches
from shared.model.authorization_policy import Action, AuthorizationPolicySpec, Condition, Rule
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


def test_request_principals_need_a_verified_token() -> None:
    allow_jwt = _policy("ALLOW", [{"from": [{"source": {"requestPrincipals": ["*"]}}]}])
    assert not Authorizer([allow_jwt]).allowed(_facts())[0]
    with_token = RequestFacts(PRODUCTPAGE, "127.0.0.1", "GET", "/", "reviews", 15006, {}, "https://idp/alice")
    assert Authorizer([allow_jwt]).allowed(with_token)[0]


def test_rule_raising_at_run_time_fails_closed() -> None:
    blocks = {"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]}
    broken = RequestFacts(PRODUCTPAGE, "not-an-ip", "GET", "/", "reviews", 15006, {})
    assert not Authorizer([_policy("DENY", [blocks])]).allowed(broken)[0]
    assert not Authorizer([_policy("ALLOW", [blocks])]).allowed(broken)[0]


def test_rule_that_cannot_compile_fails_closed() -> None:
    """A policy built without galley's validation (bad key): DENY matches everything, ALLOW nothing."""
    bad = Condition.model_construct(key="request.bogus", values=["x"], not_values=[])
    rule = Rule.model_construct(from_=[], to=[], when=[bad])
    for action, expected in (("DENY", False), ("ALLOW", False)):
        spec = AuthorizationPolicySpec.model_construct(
            selector=None, action=Action(action), rules=[rule], provider=None
        )
        policy = NamedAuthorizationPolicy.model_construct(name="bad", namespace="default", spec=spec)
        assert Authorizer([policy]).allowed(_facts())[0] is expected


def test_conditions_on_headers() -> None:
    policy = _policy("ALLOW", [{"when": [{"key": "request.headers[X-User]", "values": ["jason"]}]}])
    assert Authorizer([policy]).allowed(_facts())[0]
    other = _policy("ALLOW", [{"when": [{"key": "request.headers[x-user]", "notValues": ["jason"]}]}])
    assert not Authorizer([other]).allowed(_facts())[0]


def test_custom_policies_name_their_provider_and_do_not_decide_alone() -> None:
    custom = NamedAuthorizationPolicy.model_validate(
        {
            "name": "ext",
            "namespace": "default",
            "spec": {
                "action": "CUSTOM",
                "provider": {"name": "opa"},
                "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}],
            },
        }
    )
    authorizer = Authorizer([custom])
    assert authorizer.custom_checks(_facts(path="/admin/x")) == [CustomCheck("default/ext", "opa")]
    assert authorizer.custom_checks(_facts(path="/public")) == []
    assert authorizer.allowed(_facts(path="/admin/x"))[0]


def test_audit_logs_without_deciding() -> None:
    audit = _policy("AUDIT", [{"to": [{"operation": {"methods": ["DELETE"]}}]}], "audit-deletes")
    authorizer = Authorizer([audit])
    assert authorizer.allowed(_facts(method="DELETE"))[0]
    assert authorizer.allowed(_facts(method="GET"))[0]
    assert authorizer.audited == ["default/audit-deletes"]


def test_value_patterns() -> None:
    assert value_matches("*", "x")
    assert value_matches("/api/*", "/api/v1")
    assert value_matches("*.local", "a.local")
    assert not value_matches("/api", "/api/v1")
    assert not value_matches("*", None)
