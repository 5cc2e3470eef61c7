"""AuthorizationPolicy on TCP connections: connection-level fields decide, HTTP-only fields as Istio treats them."""

from __future__ import annotations

from typing import Any

import pytest

from services.proxy.authz import RequestFacts
from services.proxy.tcp_authz import tcp_authorizer
from shared.model.proxy_config import NamedAuthorizationPolicy

CALLER = "spiffe://cluster.local/ns/shop/sa/billing"


def _facts(peer: str | None = CALLER, ip: str = "10.0.0.7", port: int = 15006) -> RequestFacts:
    return RequestFacts(peer_spiffe_id=peer, source_ip=ip, method="", path="", host="", port=port, headers={})


def _allowed(*specs: dict[str, Any], facts: RequestFacts | None = None) -> bool:
    policies = [
        NamedAuthorizationPolicy.model_validate({"name": f"p{i}", "namespace": "shop", "spec": spec})
        for i, spec in enumerate(specs)
    ]
    return tcp_authorizer(policies).allowed(facts or _facts())[0]


@pytest.mark.parametrize(
    ("spec", "allowed"),
    [
        (
            {
                "action": "ALLOW",
                "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/billing"]}}]}],
            },
            True,
        ),
        ({"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": ["other"]}}]}]}, False),
        ({"action": "ALLOW", "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/24"]}}]}]}, True),
        ({"action": "ALLOW", "rules": [{"to": [{"operation": {"ports": ["15006"]}}]}]}, True),
        ({"action": "ALLOW", "rules": [{"to": [{"operation": {"ports": ["15006"], "methods": ["GET"]}}]}]}, False),
        ({"action": "ALLOW", "rules": [{"when": [{"key": "request.headers[x]", "values": ["1"]}]}]}, False),
        ({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}, False),
        ({"action": "DENY", "rules": [{"to": [{"operation": {"ports": ["1"], "paths": ["/x"]}}]}]}, True),
        ({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{}]}, False),
        ({"action": "AUDIT", "rules": [{}]}, True),
    ],
)
def test_connection_level_decisions(spec: dict[str, Any], allowed: bool) -> None:
    assert _allowed(spec) is allowed


def test_an_allow_rule_without_http_fields_still_allows_next_to_one_with_them() -> None:
    mixed = {
        "action": "ALLOW",
        "rules": [{"to": [{"operation": {"paths": ["/a"]}}]}, {"from": [{"source": {"namespaces": ["shop"]}}]}],
    }
    assert _allowed(mixed)
    assert not _allowed(mixed, facts=_facts(peer=None))
