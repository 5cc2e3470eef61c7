"""A caller is whoever its token names, or whoever holds a current cert of ours and signed the new CSR with it."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from services.citadel.authenticate import Unauthenticated, authenticate
from services.citadel.ca import CertificateAuthority
from services.citadel.renewal import RenewalProof, sign_renewal
from services.citadel.tokens import create_token
from shared.clock import FakeClock
from shared.identity import SpiffeId
from shared.identity.svid import build_csr, new_private_key, private_key_pem

START = 1_800_000_000.0
WEB = SpiffeId("cluster.local", "shop", "web")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=START)


@pytest.fixture
def ca(clock: FakeClock) -> CertificateAuthority:
    return CertificateAuthority.create("cluster.local", clock=clock)


def current_cert(ca: CertificateAuthority) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = new_private_key()
    (leaf,) = ca.sign_csr(build_csr(key, WEB.uri), WEB, 3600)
    return key, leaf


def test_token_names_the_caller(ca: CertificateAuthority, clock: FakeClock) -> None:
    token = create_token(ca, "shop", "web", 60, clock)
    assert authenticate(ca, token, None, b"", clock) == WEB


def test_bad_token_is_unauthenticated_even_with_a_renewal_proof(ca: CertificateAuthority, clock: FakeClock) -> None:
    key, leaf = current_cert(ca)
    csr = build_csr(new_private_key(), WEB.uri)
    proof = RenewalProof(leaf, sign_renewal(private_key_pem(key), csr))
    with pytest.raises(Unauthenticated, match="bootstrap token refused"):
        authenticate(ca, "garbage", proof, csr, clock)


def test_renewal_proof_names_the_cert_holder(ca: CertificateAuthority, clock: FakeClock) -> None:
    key, leaf = current_cert(ca)
    csr = build_csr(new_private_key(), WEB.uri)
    assert authenticate(ca, "", RenewalProof(leaf, sign_renewal(private_key_pem(key), csr)), csr, clock) == WEB


def test_proof_over_another_csr_is_refused(ca: CertificateAuthority, clock: FakeClock) -> None:
    key, leaf = current_cert(ca)
    signed = build_csr(new_private_key(), WEB.uri)
    sent = build_csr(new_private_key(), WEB.uri)
    with pytest.raises(Unauthenticated, match="renewal proof"):
        authenticate(ca, "", RenewalProof(leaf, sign_renewal(private_key_pem(key), signed)), sent, clock)


def test_proof_by_a_key_other_than_the_certs_is_refused(ca: CertificateAuthority, clock: FakeClock) -> None:
    _, leaf = current_cert(ca)
    csr = build_csr(new_private_key(), WEB.uri)
    stranger = private_key_pem(new_private_key())
    with pytest.raises(Unauthenticated, match="renewal proof"):
        authenticate(ca, "", RenewalProof(leaf, sign_renewal(stranger, csr)), csr, clock)


async def test_expired_cert_cannot_renew(ca: CertificateAuthority, clock: FakeClock) -> None:
    key, leaf = current_cert(ca)
    csr = build_csr(new_private_key(), WEB.uri)
    proof = RenewalProof(leaf, sign_renewal(private_key_pem(key), csr))
    await clock.advance(3600)
    with pytest.raises(Unauthenticated, match="expired"):
        authenticate(ca, "", proof, csr, clock)


def test_cert_from_another_ca_cannot_renew(ca: CertificateAuthority, clock: FakeClock) -> None:
    key, leaf = current_cert(CertificateAuthority.create("cluster.local", clock=clock))
    csr = build_csr(new_private_key(), WEB.uri)
    with pytest.raises(Unauthenticated, match="not issued by this citadel"):
        authenticate(ca, "", RenewalProof(leaf, sign_renewal(private_key_pem(key), csr)), csr, clock)


def test_citadels_own_server_cert_cannot_renew(ca: CertificateAuthority, clock: FakeClock) -> None:
    key_pem, (leaf,) = ca.issue_server_certificate(["citadel"], [], 3600)
    csr = build_csr(new_private_key(), WEB.uri)
    with pytest.raises(Unauthenticated, match="not a workload"):
        authenticate(ca, "", RenewalProof(leaf, sign_renewal(key_pem, csr)), csr, clock)


def test_nothing_presented_is_unauthenticated(ca: CertificateAuthority, clock: FakeClock) -> None:
    with pytest.raises(Unauthenticated, match="send a bootstrap token"):
        authenticate(ca, "", None, b"", clock)
    with pytest.raises(Unauthenticated, match="not valid PEM"):
        authenticate(ca, "", RenewalProof(b"junk", b"junk"), b"", clock)
