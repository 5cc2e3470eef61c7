"""Outbound transport per endpoint: the destination's PeerAuthentication (auto mTLS) and DestinationRule tls."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.pilot.generate import generate
from services.pilot.snapshot import Instance
from services.pilot.testing import meshed, plain, proxy_of, resources, snapshot

TD = "cluster.local"
ROOT = "isthmus-system"
REVIEWS_ID = "spiffe://cluster.local/ns/shop/sa/reviews"
CALLER = meshed("frontend", "10.0.0.1", namespace="shop")
REVIEWS = meshed("reviews", "10.0.1.1", namespace="shop", app_port=8080, app="reviews")


def _identities(config: str, catalog: list[Instance] | None = None) -> dict[str, str | None]:
    """Endpoint address -> identity the caller verifies (None: plain text), for every cluster of reviews."""
    snap = snapshot(catalog or [CALLER, REVIEWS], config)
    generated = generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)
    return {e.address: e.identity for c in generated.clusters if c.host == "reviews" for e in c.endpoints}


def _peer_authentication(name: str, namespace: str, body: str) -> str:
    return (
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec: {body}\n---\n"
    )


def _workload(mode: str, app: str = "reviews", ports: str = "{}") -> str:
    """A workload-level PeerAuthentication in shop selecting `app`."""
    return _peer_authentication(
        "w", "shop", f"{{selector: {{matchLabels: {{app: {app}}}}}, mtls: {{mode: {mode}}}, portLevelMtls: {ports}}}"
    )


def _tls_rule(mode: str, namespace: str = "shop") -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        f"metadata: {{name: reviews, namespace: {namespace}}}\n"
        f"spec: {{host: reviews, trafficPolicy: {{tls: {{mode: {mode}}}}}}}\n"
    )


def test_meshed_destination_without_policy_is_called_over_mtls() -> None:
    assert _identities("") == {"10.0.1.1": REVIEWS_ID}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (_peer_authentication("mesh", ROOT, "{mtls: {mode: DISABLE}}"), None),
        (_peer_authentication("ns", "shop", "{mtls: {mode: DISABLE}}"), None),
        (_peer_authentication("mesh", ROOT, "{mtls: {mode: STRICT}}"), REVIEWS_ID),
        # The namespace level overrides the mesh level, both ways.
        (
            _peer_authentication("mesh", ROOT, "{mtls: {mode: DISABLE}}")
            + _peer_authentication("ns", "shop", "{mtls: {mode: PERMISSIVE}}"),
            REVIEWS_ID,
        ),
        (
            _peer_authentication("mesh", ROOT, "{mtls: {mode: STRICT}}")
            + _peer_authentication("ns", "shop", "{mtls: {mode: DISABLE}}"),
            None,
        ),
        # Workload level overrides the namespace; UNSET inherits.
        (
            _peer_authentication("ns", "shop", "{mtls: {mode: DISABLE}}") + _workload("STRICT"),
            REVIEWS_ID,
        ),
        (
            _peer_authentication("ns", "shop", "{mtls: {mode: DISABLE}}") + _workload("UNSET"),
            None,
        ),
        # A workload policy selecting someone else does not apply.
        (
            _workload("DISABLE", app="other"),
            REVIEWS_ID,
        ),
        # A policy in another namespace does not apply.
        (_peer_authentication("ns", "other", "{mtls: {mode: DISABLE}}"), REVIEWS_ID),
        # Port level on the destination's app port wins over its workload mode.
        (
            _workload("STRICT", ports="{8080: {mode: DISABLE}}"),
            None,
        ),
        (
            _workload("DISABLE", ports="{8080: {mode: PERMISSIVE}}"),
            REVIEWS_ID,
        ),
        # Another port's entry does not apply.
        (
            _workload("STRICT", ports="{9090: {mode: DISABLE}}"),
            REVIEWS_ID,
        ),
    ],
)
def test_destination_peer_authentication_decides_the_transport(config: str, expected: str | None) -> None:
    assert _identities(config) == {"10.0.1.1": expected}


def test_destination_without_registered_app_port_follows_its_workload_mode() -> None:
    unknown_port = meshed("reviews", "10.0.1.1", namespace="shop", app="reviews")
    config = _workload("DISABLE", ports="{8080: {mode: STRICT}}")
    assert _identities(config, [CALLER, unknown_port]) == {"10.0.1.1": None}


def test_only_the_disabled_instances_of_a_service_are_called_in_plain_text() -> None:
    v2 = meshed("reviews", "10.0.1.2", namespace="shop", app_port=8080, app="reviews", version="v2")
    config = _peer_authentication("w", "shop", "{selector: {matchLabels: {version: v2}}, mtls: {mode: DISABLE}}")
    assert _identities(config, [CALLER, REVIEWS, v2]) == {"10.0.1.1": REVIEWS_ID, "10.0.1.2": None}


def test_destination_rule_disable_forces_plain_text_even_to_strict_destinations() -> None:
    config = _peer_authentication("ns", "shop", "{mtls: {mode: STRICT}}") + _tls_rule("DISABLE")
    assert _identities(config) == {"10.0.1.1": None}


def test_destination_rule_istio_mutual_forces_mtls_even_to_disabled_destinations() -> None:
    config = _peer_authentication("ns", "shop", "{mtls: {mode: DISABLE}}") + _tls_rule("ISTIO_MUTUAL")
    assert _identities(config) == {"10.0.1.1": REVIEWS_ID}


def test_destination_rule_istio_mutual_to_an_instance_without_sidecar_uses_mtls_and_fails_there() -> None:
    catalog = [CALLER, plain("reviews", "10.0.1.9", 8080)]
    assert _identities(_tls_rule("ISTIO_MUTUAL", namespace="default"), catalog) == {
        "10.0.1.9": "spiffe://cluster.local/ns/default/sa/default"
    }


def test_plain_instance_stays_plain_text() -> None:
    assert _identities("", [CALLER, plain("reviews", "10.0.1.9", 8080)]) == {"10.0.1.9": None}


def test_subset_tls_overrides_the_top_level_tls() -> None:
    rule = (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: shop}\n"
        "spec:\n  host: reviews\n  trafficPolicy: {tls: {mode: DISABLE}}\n"
        "  subsets:\n  - {name: v1, labels: {version: v1}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: shop}\n"
        "spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}}]}]}\n"
    )
    v1 = meshed("reviews", "10.0.1.1", namespace="shop", app_port=8080, app="reviews", version="v1")
    snap = snapshot([CALLER, v1], rule)
    generated = generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)
    by_cluster = {c.name: [e.identity for e in c.endpoints] for c in generated.clusters if c.host == "reviews"}
    assert by_cluster["outbound|80|v1|reviews"] == [REVIEWS_ID]
    assert by_cluster["outbound|80||reviews"] == [None]


def test_tls_block_without_mode_means_disable_as_in_istio() -> None:
    rule = _tls_rule("DISABLE").replace("{mode: DISABLE}", "{}")
    assert _identities(rule) == {"10.0.1.1": None}


def test_tls_origination_calls_the_destination_without_mesh_identity() -> None:
    """SIMPLE (and MUTUAL) TLS is originated by the caller's sidecar with the rule's own certificates."""
    assert _identities(_tls_rule("SIMPLE")) == {"10.0.1.1": None}


def test_mutual_without_client_certificate_is_rejected_naming_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        resources(_tls_rule("MUTUAL"))
    message = str(err.value)
    assert "tls" in message and "MUTUAL" in message and "clientCertificate" in message
