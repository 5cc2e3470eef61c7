"""Builders for tests and benchmarks of citadel and its users: plug-in CA files (Istio's cacerts layout) written to a
directory, and an in-process certificate source that signs with a CA directly (no gRPC, no token)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.citadel.ca import CertificateAuthority
from services.citadel.ca_store import CERT_FILE, CHAIN_FILE, KEY_FILE, KEY_MODE, ROOT_FILE
from shared.clock import SYSTEM_CLOCK, Clock
from shared.identity.spiffe import SCHEME, parse_spiffe_id
from shared.identity.svid import IssuedCertificate, private_key_pem


@dataclass(frozen=True)
class PluginCa:
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey


def ca_certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    trust_domain: str,
    clock: Clock = SYSTEM_CLOCK,
) -> x509.Certificate:
    """A CA certificate valid from a day ago for a year, naming spiffe://<trust_domain>."""
    now = datetime.datetime.fromtimestamp(clock.wall(), tz=datetime.UTC)
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
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"{SCHEME}{trust_domain}")]), False)
        .sign(issuer_key, hashes.SHA256())
    )


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def new_plugin_ca(name: str, trust_domain: str = "cluster.local", clock: Clock = SYSTEM_CLOCK) -> PluginCa:
    root_key, intermediate_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = ca_certificate(f"{name} root", root_key, None, root_key, trust_domain, clock)
    intermediate = ca_certificate(f"{name} intermediate", intermediate_key, root, root_key, trust_domain, clock)
    return PluginCa(root, root_key, intermediate, intermediate_key)


def write_plugin_ca(state_dir: Path, ca: PluginCa) -> None:
    """ca-cert.pem, ca-key.pem (0600), cert-chain.pem and root-cert.pem, each replaced atomically."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _replace(state_dir / KEY_FILE, private_key_pem(ca.intermediate_key), KEY_MODE)
    _replace(state_dir / CERT_FILE, pem(ca.intermediate))
    _replace(state_dir / CHAIN_FILE, pem(ca.intermediate, ca.root))
    _replace(state_dir / ROOT_FILE, pem(ca.root))


def _replace(path: Path, data: bytes, mode: int = 0o644) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    temp.chmod(mode)
    temp.replace(path)


@dataclass
class DirectCaSource:
    """A sidecar's certificate source that signs each CSR with `ca` for the identity the CSR names."""

    ca: CertificateAuthority
    ttl_seconds: int = 3600

    async def issue(self, csr_pem: bytes) -> IssuedCertificate:
        csr = x509.load_pem_x509_csr(csr_pem)
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        identity = parse_spiffe_id(san.get_values_for_type(x509.UniformResourceIdentifier)[0])
        chain = self.ca.sign_csr(csr_pem, identity, self.ttl_seconds)
        leaf = x509.load_pem_x509_certificate(chain[0])
        return IssuedCertificate(chain, self.ca.trust_bundle_pem(), leaf.not_valid_after_utc.timestamp())
