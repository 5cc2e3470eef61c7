"""Inbound simulation: PeerAuthentication precedence and AuthorizationPolicy selection for one proxy."""

from __future__ import annotations

import pytest

from services.pilot.generate import generate
from services.pilot.testing import meshed, proxy_of, snapshot
from shared.model.peer_authentication import MtlsMode

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
