"""The CA persists its root privately, reloads it, and signs only well-formed CSRs for the right identity."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from services.citadel.ca import BACKDATE_SECONDS, CertificateAuthority, TtlPolicy
from services.citadel.ca_store import KEY_FILE, CaStateError
from services.citadel.csr import MAX_CSR_BYTES, CsrRefused, IdentityMismatch
from shared.clock import FakeClock
from shared.identity import SpiffeId
from shared.identity.svid import build_csr, new_private_key

WEB = SpiffeId("cluster.local", "default", "web")
START = 1_800_000_000.0


def csr_with_sans(names: list[x509.GeneralName], key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    csr = builder.sign(key or new_private_key(), hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=START)


@pytest.fixture
def ca(clock: FakeClock) -> CertificateAuthority:
    return CertificateAuthority.create("cluster.local", clock=clock, ttl=TtlPolicy(24 * 3600, 48 * 3600))


def test_root_is_persisted_privately_and_reloaded(tmp_path: Path) -> None:
    state = tmp_path / "state" / "citadel"
    first = CertificateAuthority.load_or_create(state, "cluster.local")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / KEY_FILE).stat().st_mode) == 0o600
    again = CertificateAuthority.load_or_create(state, "cluster.local")
    assert again.trust_bundle_pem() == first.trust_bundle_pem()
    assert again.key_pem() == first.key_pem()
    assert CertificateAuthority.load(state).trust_domain == "cluster.local"


def test_root_is_a_ten_year_p256_ca(ca: CertificateAuthority) -> None:
    root = ca.root_cert
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = root.not_valid_after_utc - root.not_valid_before_utc
    assert lifetime >= datetime.timedelta(days=3650)


def test_reload_refuses_another_trust_domain(tmp_path: Path) -> None:
    CertificateAuthority.load_or_create(tmp_path, "cluster.local")
    with pytest.raises(CaStateError, match=r"trust domain 'cluster\.local'"):
        CertificateAuthority.load_or_create(tmp_path, "example.org")


def test_reload_refuses_a_key_others_can_read(tmp_path: Path) -> None:
    CertificateAuthority.load_or_create(tmp_path, "cluster.local")
    (tmp_path / KEY_FILE).chmod(0o644)
    with pytest.raises(CaStateError, match="must be private"):
        CertificateAuthority.load_or_create(tmp_path, "cluster.local")


def test_half_written_state_is_an_error_not_a_new_ca(tmp_path: Path) -> None:
    CertificateAuthority.load_or_create(tmp_path, "cluster.local")
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(CaStateError, match="missing"):
        CertificateAuthority.load_or_create(tmp_path, "cluster.local")


def test_load_without_state_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(CaStateError, match="no CA in"):
        CertificateAuthority.load(tmp_path / "empty")


def test_leaf_carries_the_spiffe_identity_and_workload_extensions(ca: CertificateAuthority) -> None:
    key = new_private_key()
    (leaf_pem,) = ca.sign_csr(build_csr(key, WEB.uri), WEB, 0)
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    leaf.verify_directly_issued_by(ca.root_cert)
    assert leaf.public_key() == key.public_key()
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert list(san.value) == [x509.UniformResourceIdentifier(WEB.uri)]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = ca.root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    assert leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.not_valid_before_utc.timestamp() == START - BACKDATE_SECONDS
    assert leaf.not_valid_after_utc.timestamp() == START + 24 * 3600


def test_requested_ttl_is_honoured_and_capped(ca: CertificateAuthority) -> None:
    short = x509.load_pem_x509_certificate(ca.sign_csr(build_csr(new_private_key(), WEB.uri), WEB, 600)[0])
    assert short.not_valid_after_utc.timestamp() == START + 600
    long = x509.load_pem_x509_certificate(ca.sign_csr(build_csr(new_private_key(), WEB.uri), WEB, 10**9)[0])
    assert long.not_valid_after_utc.timestamp() == START + 48 * 3600


def test_negative_ttl_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(CsrRefused, match="ttl_seconds"):
        ca.sign_csr(build_csr(new_private_key(), WEB.uri), WEB, -1)


def test_csr_for_another_identity_is_refused(ca: CertificateAuthority) -> None:
    other = "spiffe://cluster.local/ns/default/sa/db"
    with pytest.raises(IdentityMismatch, match="sa/db but the caller is"):
        ca.sign_csr(build_csr(new_private_key(), other), WEB, 0)


def test_identity_outside_the_trust_domain_is_refused(ca: CertificateAuthority) -> None:
    foreign = SpiffeId("example.org", "default", "web")
    with pytest.raises(IdentityMismatch, match="trust domain"):
        ca.sign_csr(build_csr(new_private_key(), foreign.uri), foreign, 0)


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        ([], "no subjectAltName"),
        ([x509.UniformResourceIdentifier(WEB.uri), x509.DNSName("evil.example")], "2 subjectAltNames"),
        ([x509.DNSName("web.default")], "must be the SPIFFE URI"),
        ([x509.UniformResourceIdentifier("https://web")], "does not start with"),
    ],
)
def test_csr_sans_other_than_one_spiffe_uri_are_refused(
    ca: CertificateAuthority, names: list[x509.GeneralName], reason: str
) -> None:
    with pytest.raises(CsrRefused, match=reason):
        ca.sign_csr(csr_with_sans(names), WEB, 0)


def test_garbage_oversized_and_tampered_csrs_are_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(CsrRefused, match="not a PEM"):
        ca.sign_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", WEB, 0)
    with pytest.raises(CsrRefused, match="empty"):
        ca.sign_csr(b"", WEB, 0)
    with pytest.raises(CsrRefused, match=f"limit is {MAX_CSR_BYTES}"):
        ca.sign_csr(b"x" * (MAX_CSR_BYTES + 1), WEB, 0)
    csr = x509.load_pem_x509_csr(build_csr(new_private_key(), WEB.uri))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrRefused, match="signature"):
        ca.sign_csr(tampered, WEB, 0)


def test_weak_rsa_key_is_refused(ca: CertificateAuthority) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(WEB.uri)]), critical=True)
        .sign(weak, hashes.SHA256())
    )
    with pytest.raises(CsrRefused, match="1024 bits"):
        ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), WEB, 0)


def test_server_certificate_names_citadel(ca: CertificateAuthority) -> None:
    key_pem, (leaf_pem,) = ca.issue_server_certificate(["localhost", "citadel"], ["127.0.0.1"], 3600)
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "citadel"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert b"PRIVATE KEY" in key_pem


def test_ttl_policy_rejects_default_above_max() -> None:
    with pytest.raises(ValueError, match="exceeds max"):
        TtlPolicy(default_seconds=100, max_seconds=10)


def test_invalid_trust_domain_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trust domain 'Not_A_Domain'"):
        CertificateAuthority.load_or_create(tmp_path, "Not_A_Domain")
    assert not (tmp_path / KEY_FILE).exists()
