"""Inbound simulation: PeerAuthentication precedence and AuthorizationPolicy selection for one proxy."""

from __future__ import annotations

import pytest

from services.pilot.generate import generate
from services.pilot.generate.inbound import endpoint_mtls_mode
from services.pilot.testing import meshed, proxy_of, snapshot
from shared.model import PeerAuthentication
from shared.model.peer_authentication import MtlsMode
from shared.model.proxy_config import InboundConfig

ROOT = "isthmus-system"
CATALOG = [
    meshed("reviews", "10.0.1.1", namespace="shop", version="v1", app="reviews"),
    meshed("orders", "10.0.3.1", namespace="shop", app="orders"),
]


def peer_auth(name: str, namespace: str, mode: str | None, selector: dict[str, str] | None = None) -> str:
    spec = []
    if selector:
        labels = ", ".join(f"{k}: {v}" for k, v in selector.items())
        spec.append(f"  selector: {{matchLabels: {{{labels}}}}}")
    if mode:
        spec.append(f"  mtls: {{mode: {mode}}}")
    body = "\n".join(spec) or "  {}"
    return f"""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{body}
"""


def mode_for(proxy_id: str, *policies: str) -> MtlsMode:
    snap = snapshot(CATALOG, "---".join(policies))
    return generate(snap, proxy_of(snap, proxy_id), "cluster.local", ROOT).inbound.mtls_mode


def test_default_is_permissive() -> None:
    assert mode_for("reviews-10.0.1.1") == MtlsMode.PERMISSIVE


@pytest.mark.parametrize(
    ("policies", "expected"),
    [
        ([peer_auth("mesh", ROOT, "STRICT")], MtlsMode.STRICT),
        ([peer_auth("mesh", ROOT, "STRICT"), peer_auth("ns", "shop", "DISABLE")], MtlsMode.DISABLE),
        (
            [
                peer_auth("mesh", ROOT, "DISABLE"),
                peer_auth("ns", "shop", "PERMISSIVE"),
                peer_auth("wl", "shop", "STRICT", {"app": "reviews"}),
            ],
            MtlsMode.STRICT,
        ),
        ([peer_auth("mesh", ROOT, "STRICT"), peer_auth("wl", "shop", "UNSET", {"app": "reviews"})], MtlsMode.STRICT),
        ([peer_auth("mesh", ROOT, "STRICT"), peer_auth("ns", "shop", None)], MtlsMode.STRICT),
        ([peer_auth("other", "elsewhere", "STRICT")], MtlsMode.PERMISSIVE),
        ([peer_auth("wl", ROOT, "STRICT", {"app": "reviews"})], MtlsMode.PERMISSIVE),
    ],
)
def test_most_specific_set_mode_wins(policies: list[str], expected: MtlsMode) -> None:
    assert mode_for("reviews-10.0.1.1", *policies) == expected


def test_a_workload_policy_applies_only_to_matching_labels() -> None:
    policies = [peer_auth("ns", "shop", "PERMISSIVE"), peer_auth("wl", "shop", "STRICT", {"app": "reviews"})]
    assert mode_for("reviews-10.0.1.1", *policies) == MtlsMode.STRICT
    assert mode_for("orders-10.0.3.1", *policies) == MtlsMode.PERMISSIVE


def authz(name: str, namespace: str, selector: str = "") -> str:
    return f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  {selector or "action: ALLOW"}
"""


def test_authorization_policies_from_root_and_own_namespace_that_select_the_proxy() -> None:
    policies = [
        authz("zz-ns-wide", "shop"),
        authz("mesh-wide", ROOT),
        authz("for-reviews", "shop", "selector: {matchLabels: {app: reviews}}"),
        authz("for-orders", "shop", "selector: {matchLabels: {app: orders}}"),
        authz("elsewhere", "other"),
    ]
    snap = snapshot(CATALOG, "---".join(policies))
    inbound = generate(snap, proxy_of(snap, "reviews-10.0.1.1"), "cluster.local", ROOT).inbound
    assert [(p.namespace, p.name) for p in inbound.authorization] == [
        (ROOT, "mesh-wide"),
        ("shop", "for-reviews"),
        ("shop", "zz-ns-wide"),
    ]


def inbound_of(proxy_id: str, *documents: str) -> InboundConfig:
    snap = snapshot(CATALOG, "---".join(documents))
    return generate(snap, proxy_of(snap, proxy_id), "cluster.local", ROOT).inbound


PORT_LEVEL = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-ports, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
  portLevelMtls:
    8080: {mode: DISABLE}
    9090: {mode: UNSET}
"""


def test_port_level_modes_are_resolved_and_sent_with_the_workload_mode() -> None:
    inbound = inbound_of("reviews-10.0.1.1", peer_auth("mesh", ROOT, "PERMISSIVE"), PORT_LEVEL)
    assert inbound.mtls_mode == MtlsMode.STRICT
    assert inbound.port_level_mtls == {8080: MtlsMode.DISABLE, 9090: MtlsMode.STRICT}
    assert inbound.mode_for_port(8080) == MtlsMode.DISABLE
    assert inbound.mode_for_port(7000) == MtlsMode.STRICT


def test_port_level_modes_count_only_in_workload_policies() -> None:
    namespace_wide = PORT_LEVEL.replace("  selector: {matchLabels: {app: reviews}}\n", "")
    inbound = inbound_of("reviews-10.0.1.1", namespace_wide)
    assert inbound.mtls_mode == MtlsMode.STRICT
    assert inbound.port_level_mtls == {}


def test_port_level_unset_inherits_the_namespace_mode() -> None:
    only_ports = PORT_LEVEL.replace("  mtls: {mode: STRICT}\n", "")
    inbound = inbound_of("reviews-10.0.1.1", peer_auth("ns", "shop", "DISABLE"), only_ports)
    assert inbound.port_level_mtls == {8080: MtlsMode.DISABLE, 9090: MtlsMode.DISABLE}
    assert inbound.mtls_mode == MtlsMode.DISABLE


def test_endpoint_mode_tells_callers_what_to_speak() -> None:
    snap = snapshot(CATALOG, PORT_LEVEL)
    policies = snap.of_kind(PeerAuthentication)
    assert endpoint_mtls_mode(policies, "shop", {"app": "reviews"}, 8080, ROOT) == MtlsMode.DISABLE
    assert endpoint_mtls_mode(policies, "shop", {"app": "reviews"}, 80, ROOT) == MtlsMode.STRICT
    assert endpoint_mtls_mode(policies, "shop", {"app": "orders"}, 8080, ROOT) == MtlsMode.PERMISSIVE


def request_authn(name: str, namespace: str, issuer: str, selector: str = "") -> str:
    return f"""
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  {selector}
  jwtRules:
  - issuer: {issuer}
    jwksUri: http://127.0.0.1:1/jwks
"""


def test_jwt_rules_from_root_and_own_namespace_that_select_the_proxy() -> None:
    inbound = inbound_of(
        "reviews-10.0.1.1",
        request_authn("mesh", ROOT, "https://mesh-idp"),
        request_authn("reviews", "shop", "https://idp", "selector: {matchLabels: {app: reviews}}"),
        request_authn("orders", "shop", "https://orders-idp", "selector: {matchLabels: {app: orders}}"),
        request_authn("other", "elsewhere", "https://other"),
    )
    assert [(rule.name, rule.rule.issuer) for rule in inbound.jwt_rules] == [
        (f"{ROOT}/mesh", "https://mesh-idp"),
        ("shop/reviews", "https://idp"),
    ]
