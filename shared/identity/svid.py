"""X.509 SVIDs: workload keys, CSRs carrying a SPIFFE URI SAN, and reading the SPIFFE ID back from a cert."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """What citadel returns for a CSR: the chain (leaf first, PEM), the roots to trust, the leaf's expiry."""

    chain_pem: tuple[bytes, ...]
    trust_bundle_pem: bytes
    not_after: float
    """Leaf expiry, seconds since the epoch."""

    @property
    def leaf_pem(self) -> bytes:
        return self.chain_pem[0]


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """ECDSA P-256, Istio's default workload key type."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def build_csr(key: ec.EllipticCurvePrivateKey, spiffe_uri: str) -> bytes:
    """A PEM CSR whose only subject alternative name is the workload's SPIFFE URI."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "isthmus")]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_uri)]), critical=True)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def spiffe_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [uri for uri in san.get_values_for_type(x509.UniformResourceIdentifier) if uri.startswith("spiffe://")]


def spiffe_id_of_cert(cert: x509.Certificate) -> str | None:
    """The certificate's single SPIFFE URI SAN, or None when it has none or more than one."""
    uris = spiffe_uris(cert)
    return uris[0] if len(uris) == 1 else None


def spiffe_id_of_der(der: bytes | None) -> str | None:
    """As spiffe_id_of_cert, from the DER bytes ssl.SSLObject.getpeercert(binary_form=True) returns."""
    if not der:
        return None
    return spiffe_id_of_cert(x509.load_der_x509_certificate(der))
