"""AuthorizationPolicy decisions: a matrix of policies (as YAML) x requests -> allow / deny, every Istio edge case."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
import yaml

from services.proxy.authz import Authorizer, RequestFacts
from shared.model import AuthorizationPolicy, parse_resource
from shared.model.proxy_config import NamedAuthorizationPolicy

ORDER = "spiffe://cluster.local/ns/shop/sa/order-service"
PRODUCT = "spiffe://cluster.local/ns/shop/sa/product-service"
OUTSIDER = "spiffe://cluster.local/ns/guest/sa/robot"


def request(
    peer: str | None = ORDER,
    ip: str = "10.0.0.5",
    method: str = "GET",
    path: str = "/api/pay",
    host: str = "payment-service",
    port: int = 15006,
    headers: dict[str, str] | None = None,
    jwt: str | None = None,
    claims: dict[str, Any] | None = None,
    sni: str = "",
) -> RequestFacts:
    return RequestFacts(peer, ip, method, path, host, port, headers or {}, jwt, claims, sni, "10.0.0.9")


def policies(text: str) -> Authorizer:
    named = []
    for document in yaml.safe_load_all(text):
        resource = parse_resource(document)
        assert isinstance(resource, AuthorizationPolicy)
        named.append(
            NamedAuthorizationPolicy(
                name=resource.metadata.name, namespace=resource.metadata.namespace, spec=resource.spec
            )
        )
    return Authorizer(named)


def policy(spec: str, name: str = "p", namespace: str = "shop") -> str:
    indented = "\n".join("  " + line for line in spec.strip().splitlines())
    return f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{indented}
"""


EMPTY_SPEC = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: shop}
spec: {}
"""

ONLY_ORDER = policy("""
action: ALLOW
rules:
- from:
  - source: {principals: [cluster.local/ns/shop/sa/order-service]}
""")

CASES: list[tuple[str, str, RequestFacts, bool]] = [
    # defaults and empty policies
    ("no policy allows", "", request(), True),
    ("spec {} denies all", EMPTY_SPEC, request(), False),
    ("ALLOW without rules denies all", policy("action: ALLOW"), request(), False),
    ("DENY without rules never matches", policy("action: DENY"), request(), True),
    ("empty rule matches everything", policy("rules: [{}]"), request(peer=None), True),
    ("empty source matches everything", policy("rules: [{from: [{source: {}}]}]"), request(peer=None), True),
    # principals, namespaces
    ("principal allowed", ONLY_ORDER, request(), True),
    ("other principal denied", ONLY_ORDER, request(peer=PRODUCT), False),
    ("plain text has no principal", ONLY_ORDER, request(peer=None), False),
    (
        "principals * needs a peer",
        policy("rules: [{from: [{source: {principals: ['*']}}]}]"),
        request(peer=None),
        False,
    ),
    ("principals * any peer", policy("rules: [{from: [{source: {principals: ['*']}}]}]"), request(PRODUCT), True),
    (
        "principal prefix",
        policy("rules: [{from: [{source: {principals: [cluster.local/ns/shop/*]}}]}]"),
        request(),
        True,
    ),
    ("principal suffix", policy("rules: [{from: [{source: {principals: ['*/sa/robot']}}]}]"), request(OUTSIDER), True),
    ("values ORed", policy("rules: [{from: [{source: {principals: [x, '*order-service']}}]}]"), request(), True),
    (
        "notPrincipals * matches plain text only",
        policy("action: DENY\nrules: [{from: [{source: {notPrincipals: ['*']}}]}]"),
        request(peer=None),
        False,
    ),
    (
        "notPrincipals * lets mTLS through",
        policy("action: DENY\nrules: [{from: [{source: {notPrincipals: ['*']}}]}]"),
        request(),
        True,
    ),
    ("namespace allowed", policy("rules: [{from: [{source: {namespaces: [shop]}}]}]"), request(), True),
    ("namespace denied", policy("rules: [{from: [{source: {namespaces: [shop]}}]}]"), request(OUTSIDER), False),
    ("notNamespaces", policy("rules: [{from: [{source: {notNamespaces: [guest]}}]}]"), request(OUTSIDER), False),
    (
        "fields of a source ANDed",
        policy("rules: [{from: [{source: {namespaces: [shop], notPrincipals: ['*/sa/order-service']}}]}]"),
        request(),
        False,
    ),
    (
        "sources ORed",
        policy("rules: [{from: [{source: {namespaces: [guest]}}, {source: {principals: ['*order-service']}}]}]"),
        request(),
        True,
    ),
    # IP blocks
    ("ipBlocks CIDR", policy("rules: [{from: [{source: {ipBlocks: [10.0.0.0/24]}}]}]"), request(), True),
    ("ipBlocks single IP", policy("rules: [{from: [{source: {ipBlocks: [10.0.0.6]}}]}]"), request(), False),
    ("notIpBlocks", policy("rules: [{from: [{source: {notIpBlocks: [10.0.0.0/8]}}]}]"), request(), False),
    ("remoteIpBlocks", policy("rules: [{from: [{source: {remoteIpBlocks: [10.0.0.5/32]}}]}]"), request(), True),
    ("notRemoteIpBlocks", policy("rules: [{from: [{source: {notRemoteIpBlocks: [10.0.0.5]}}]}]"), request(), False),
    # request principals (JWT)
    (
        "requestPrincipals exact",
        policy("rules: [{from: [{source: {requestPrincipals: [https://idp/alice]}}]}]"),
        request(jwt="https://idp/alice"),
        True,
    ),
    (
        "requestPrincipals * needs a token",
        policy("rules: [{from: [{source: {requestPrincipals: ['*']}}]}]"),
        request(),
        False,
    ),
    (
        "notRequestPrincipals",
        policy("rules: [{from: [{source: {notRequestPrincipals: ['https://idp/*']}}]}]"),
        request(jwt="https://idp/bob"),
        False,
    ),
    # operations
    ("methods", policy("rules: [{to: [{operation: {methods: [GET, HEAD]}}]}]"), request(method="POST"), False),
    ("notMethods", policy("rules: [{to: [{operation: {notMethods: [DELETE]}}]}]"), request(method="GET"), True),
    ("path prefix", policy("rules: [{to: [{operation: {paths: [/api/*]}}]}]"), request(path="/api/pay?x=1"), True),
    (
        "path exact ignores query",
        policy("rules: [{to: [{operation: {paths: [/api/pay]}}]}]"),
        request(path="/api/pay?a"),
        True,
    ),
    ("path suffix", policy("rules: [{to: [{operation: {paths: ['*.png']}}]}]"), request(path="/a/b.png"), True),
    ("notPaths", policy("rules: [{to: [{operation: {notPaths: [/admin*]}}]}]"), request(path="/admin/x"), False),
    ("hosts case-insensitive", policy("rules: [{to: [{operation: {hosts: [Payment-Service]}}]}]"), request(), True),
    (
        "host without port matches host:port",
        policy("rules: [{to: [{operation: {hosts: [payment-service]}}]}]"),
        request(host="payment-service:80"),
        True,
    ),
    ("notHosts", policy("rules: [{to: [{operation: {notHosts: ['*-service']}}]}]"), request(), False),
    ("ports", policy("rules: [{to: [{operation: {ports: ['15006']}}]}]"), request(), True),
    ("notPorts", policy("rules: [{to: [{operation: {notPorts: ['15006']}}]}]"), request(), False),
    (
        "operation fields ANDed",
        policy("rules: [{to: [{operation: {methods: [GET], paths: [/other]}}]}]"),
        request(),
        False,
    ),
    (
        "from AND to",
        policy("rules: [{from: [{source: {namespaces: [shop]}}], to: [{operation: {methods: [POST]}}]}]"),
        request(),
        False,
    ),
    # conditions
    (
        "header condition",
        policy("rules: [{when: [{key: 'request.headers[X-Tenant]', values: [acme]}]}]"),
        request(headers={"x-tenant": "acme"}),
        True,
    ),
    (
        "missing header does not match values",
        policy("rules: [{when: [{key: 'request.headers[x-tenant]', values: ['*']}]}]"),
        request(),
        False,
    ),
    (
        "header notValues",
        policy("rules: [{when: [{key: 'request.headers[x-tenant]', notValues: [evil*]}]}]"),
        request(headers={"x-tenant": "evil-corp"}),
        False,
    ),
    ("source.ip", policy("rules: [{when: [{key: source.ip, values: [10.0.0.0/16]}]}]"), request(), True),
    ("remote.ip", policy("rules: [{when: [{key: remote.ip, notValues: [10.0.0.5]}]}]"), request(), False),
    ("source.namespace", policy("rules: [{when: [{key: source.namespace, values: [shop]}]}]"), request(), True),
    (
        "source.principal",
        policy("rules: [{when: [{key: source.principal, values: ['*/sa/product-service']}]}]"),
        request(),
        False,
    ),
    (
        "request.auth.principal",
        policy("rules: [{when: [{key: request.auth.principal, values: [https://idp/alice]}]}]"),
        request(jwt="https://idp/alice"),
        True,
    ),
    (
        "claims: a list claim matches any element",
        policy("rules: [{when: [{key: 'request.auth.claims[groups]', values: [admins]}]}]"),
        request(jwt="i/s", claims={"groups": ["users", "admins"]}),
        True,
    ),
    (
        "claims: nested",
        policy("rules: [{when: [{key: 'request.auth.claims[realm][role]', values: [owner]}]}]"),
        request(jwt="i/s", claims={"realm": {"role": "owner"}}),
        True,
    ),
    (
        "claims: absent without a token",
        policy("rules: [{when: [{key: 'request.auth.claims[groups]', values: ['*']}]}]"),
        request(),
        False,
    ),
    (
        "request.auth.audiences",
        policy("rules: [{when: [{key: request.auth.audiences, values: [payments]}]}]"),
        request(jwt="i/s", claims={"aud": ["shop", "payments"]}),
        True,
    ),
    (
        "request.auth.presenter",
        policy("rules: [{when: [{key: request.auth.presenter, values: [web]}]}]"),
        request(jwt="i/s", claims={"azp": "web"}),
        True,
    ),
    ("destination.port", policy("rules: [{when: [{key: destination.port, values: ['15006']}]}]"), request(), True),
    ("destination.ip", policy("rules: [{when: [{key: destination.ip, values: [10.0.0.9]}]}]"), request(), True),
    (
        "connection.sni",
        policy("rules: [{when: [{key: connection.sni, values: ['*.shop']}]}]"),
        request(sni="payment.shop"),
        True,
    ),
    (
        "conditions ANDed",
        policy(
            "rules: [{when: [{key: source.namespace, values: [shop]}, {key: 'request.headers[x-a]', values: [b]}]}]"
        ),
        request(),
        False,
    ),
    # several policies: DENY before ALLOW, ALLOW policies ORed
    (
        "DENY wins",
        ONLY_ORDER + "---" + policy("action: DENY\nrules: [{to: [{operation: {methods: [DELETE]}}]}]", "d"),
        request(method="DELETE"),
        False,
    ),
    (
        "DENY not matching",
        ONLY_ORDER + "---" + policy("action: DENY\nrules: [{to: [{operation: {methods: [DELETE]}}]}]", "d"),
        request(),
        True,
    ),
    (
        "any ALLOW policy suffices",
        ONLY_ORDER + "---" + policy("rules: [{from: [{source: {namespaces: [guest]}}]}]", "guests"),
        request(OUTSIDER),
        True,
    ),
    ("AUDIT alone decides nothing", policy("action: AUDIT\nrules: [{}]"), request(), True),
    (
        "AUDIT does not count as ALLOW",
        ONLY_ORDER + "---" + policy("action: AUDIT\nrules: [{}]", "a"),
        request(PRODUCT),
        False,
    ),
    (
        "root-namespace DENY",
        policy("action: DENY\nrules: [{from: [{source: {namespaces: [guest]}}]}]", "mesh", "isthmus-system"),
        request(OUTSIDER),
        False,
    ),
]


@pytest.mark.parametrize(("name", "text", "facts", "allowed"), CASES, ids=[case[0] for case in CASES])
def test_decision(name: str, text: str, facts: RequestFacts, allowed: bool) -> None:
    decided, reason = policies(text).allowed(facts)
    assert decided is allowed, f"{name}: {reason}"


def test_custom_is_asked_first_and_only_when_it_matches() -> None:
    authorizer = policies(
        policy("action: CUSTOM\nprovider: {name: opa}\nrules: [{to: [{operation: {paths: [/admin*]}}]}]", "ext")
    )
    assert [c.provider for c in authorizer.custom_checks(request(path="/admin"))] == ["opa"]
    assert authorizer.custom_checks(request(path="/api")) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rules: [{when: [{key: request.bogus, values: [x]}]}]", "condition key 'request.bogus' is not supported"),
        ("rules: [{when: [{key: 'request.headers[]', values: [x]}]}]", "is not supported"),
        ("rules: [{when: [{key: source.ip, values: [not-an-ip]}]}]", "not an IP address or CIDR"),
        ("rules: [{when: [{key: destination.port, values: [http]}]}]", "is not a port"),
        ("rules: [{when: [{key: source.namespace}]}]", "at least one of values or notValues"),
        ("rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]", "not an IP address or CIDR"),
        ("rules: [{to: [{operation: {ports: ['0']}}]}]", "is not a port"),
        ("action: CUSTOM\nrules: [{}]", "provider must be set"),
    ],
)
def test_invalid_policies_are_rejected_at_validation(spec: str, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        policies(policy(spec))
