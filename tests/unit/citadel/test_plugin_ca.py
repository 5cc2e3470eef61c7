"""Plug-in CA (Istio's cacerts layout), extra roots for rotation, renewals across a root change, token revocation."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.citadel.authenticate import Unauthenticated, authenticate
from services.citadel.ca import CertificateAuthority
from services.citadel.ca_store import CHAIN_FILE, EXTRA_ROOTS_FILE, KEY_FILE, ROOT_FILE, CaStateError
from services.citadel.renewal import RenewalProof, sign_renewal
from services.citadel.tokens import TokenRefused, create_token, unverified_claims, verify_token
from shared.clock import FakeClock
from shared.identity import SpiffeId
from shared.identity.svid import build_csr, new_private_key, private_key_pem

START = 1_800_000_000.0
WEB = SpiffeId("cluster.local", "shop", "web")


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = datetime.datetime.fromtimestamp(START, tz=datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def write_plugin(state: Path) -> tuple[x509.Certificate, x509.Certificate]:
    """root -> intermediate, written as ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem; returns both."""
    root_key, intermediate_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = _cert("plug-in root", root_key, None, root_key)
    intermediate = _cert("plug-in intermediate", intermediate_key, root, root_key)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    (state / "ca-cert.pem").write_bytes(_pem(intermediate))
    (state / KEY_FILE).write_bytes(private_key_pem(intermediate_key))
    (state / KEY_FILE).chmod(0o600)
    (state / CHAIN_FILE).write_bytes(_pem(intermediate, root))
    (state / ROOT_FILE).write_bytes(_pem(root))
    return root, intermediate


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=START)


def test_plugin_ca_signs_with_the_intermediate_and_sends_its_chain(tmp_path: Path, clock: FakeClock) -> None:
    root, intermediate = write_plugin(tmp_path)
    ca = CertificateAuthority.load_or_create(tmp_path, "cluster.local", clock=clock)
    assert ca.plugged and ca.trust_domain == "cluster.local"
    chain = ca.sign_csr(build_csr(new_private_key(), WEB.uri), WEB, 3600)
    leaf, sent_intermediate = (x509.load_pem_x509_certificate(pem) for pem in chain)
    assert sent_intermediate == intermediate
    leaf.verify_directly_issued_by(intermediate)
    assert ca.trust_bundle_pem() == _pem(root)  # the root goes in the bundle, never in the chain


def test_plugin_chain_that_does_not_reach_the_root_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    write_plugin(tmp_path)
    other_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / ROOT_FILE).write_bytes(_pem(_cert("someone else", other_key, None, other_key)))
    with pytest.raises(CaStateError, match=r"does not chain to root-cert\.pem"):
        CertificateAuthority.load(tmp_path, clock=clock, trust_domain="cluster.local")


def test_half_a_plugin_ca_is_an_error(tmp_path: Path, clock: FakeClock) -> None:
    write_plugin(tmp_path)
    (tmp_path / CHAIN_FILE).unlink()
    with pytest.raises(CaStateError, match=r"cert-chain\.pem is missing"):
        CertificateAuthority.load(tmp_path, clock=clock)


def test_plugin_ca_tokens_verify(tmp_path: Path, clock: FakeClock) -> None:
    write_plugin(tmp_path)
    ca = CertificateAuthority.load(tmp_path, clock=clock, trust_domain="cluster.local")
    assert verify_token(ca, create_token(ca, "shop", "web", 60, clock), clock) == ("shop", "web")


def _renewal(ca: CertificateAuthority) -> tuple[RenewalProof, bytes]:
    key = new_private_key()
    leaf = ca.sign_csr(build_csr(key, WEB.uri), WEB, 3600)[0]
    new_key = new_private_key()
    csr = build_csr(new_key, WEB.uri)
    return RenewalProof(cert_pem=leaf, signature=sign_renewal(private_key_pem(key), csr)), csr


def test_root_rotation_overlap_and_retirement(tmp_path: Path, clock: FakeClock) -> None:
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old = CertificateAuthority.load_or_create(old_dir, "cluster.local", clock=clock)
    new = CertificateAuthority.load_or_create(new_dir, "cluster.local", clock=clock)
    proof, csr = _renewal(old)

    # 1. the new root is published next to the old one: workloads trust both
    (old_dir / EXTRA_ROOTS_FILE).write_bytes(new.trust_bundle_pem())
    announcing = CertificateAuthority.load(old_dir, clock=clock)
    assert announcing.trust_bundle_pem() == old.trust_bundle_pem() + new.trust_bundle_pem()

    # 2. the new CA signs; the old root stays trusted, and certificates it issued may still renew
    (new_dir / EXTRA_ROOTS_FILE).write_bytes(old.trust_bundle_pem())
    overlap = CertificateAuthority.load(new_dir, clock=clock)
    assert overlap.trust_bundle_pem() == new.trust_bundle_pem() + old.trust_bundle_pem()
    assert authenticate(overlap, "", proof, csr, clock) == WEB
    renewed = overlap.sign_csr(csr, WEB, 3600)[0]
    x509.load_pem_x509_certificate(renewed).verify_directly_issued_by(new.root_cert)

    # 3. the old root is retired: it is no longer trusted, its certificates no longer renew
    (new_dir / EXTRA_ROOTS_FILE).unlink()
    retired = CertificateAuthority.load(new_dir, clock=clock)
    assert retired.trust_bundle_pem() == new.trust_bundle_pem()
    with pytest.raises(Unauthenticated, match="not issued by this citadel's CA"):
        authenticate(retired, "", proof, csr, clock)


def test_revoked_token_is_refused_and_unknown_state_fails_closed(clock: FakeClock) -> None:
    ca = CertificateAuthority.create("cluster.local", clock=clock)
    token = create_token(ca, "shop", "web", 60, clock)
    jti = unverified_claims(token)["jti"]
    assert verify_token(ca, token, clock, lambda j: False) == ("shop", "web")
    with pytest.raises(TokenRefused, match="token revoked"):
        verify_token(ca, token, clock, lambda j: j == jti)

    def unknown(_jti: str) -> bool:
        raise RuntimeError("not loaded")

    with pytest.raises(TokenRefused, match="cannot be checked"):
        verify_token(ca, token, clock, unknown)
    with pytest.raises(Unauthenticated) as caught:
        authenticate(ca, token, None, b"", clock, lambda j: True)
    assert caught.value.kind == "token_revoked"
