"""SPIFFE IDs and SVID helpers: the identity strings every component agrees on."""

from __future__ import annotations

import pytest
from cryptography import x509

from shared.identity import SpiffeId, parse_spiffe_id, principal_of
from shared.identity.spiffe import InvalidSpiffeId
from shared.identity.svid import build_csr, new_private_key


def test_uri_and_principal_forms() -> None:
    identity = SpiffeId("cluster.local", "shop", "order-service")
    assert identity.uri == "spiffe://cluster.local/ns/shop/sa/order-service"
    assert identity.principal == "cluster.local/ns/shop/sa/order-service"
    assert parse_spiffe_id(identity.uri) == identity
    assert principal_of(identity.uri) == identity.principal


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://cluster.local/ns/a/sa/b", "does not start with"),
        ("spiffe://cluster.local/ns/a", "is not of the form"),
        ("spiffe://cluster.local/sa/a/ns/b", "is not of the form"),
        ("spiffe://Cluster_Local/ns/a/sa/b", "trust domain"),
        ("spiffe://cluster.local/ns/a b/sa/c", "namespace"),
    ],
)
def test_malformed_ids_are_refused_with_reason(uri: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeId, match=reason):
        parse_spiffe_id(uri)


def test_csr_carries_exactly_the_spiffe_uri_as_critical_san() -> None:
    key = new_private_key()
    uri = "spiffe://cluster.local/ns/shop/sa/payment-service"
    csr = x509.load_pem_x509_csr(build_csr(key, uri))
    assert csr.is_signature_valid
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
