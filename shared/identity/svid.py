"""X.509 SVIDs: workload keys, CSRs carrying a SPIFFE URI SAN, reading the SPIFFE ID back, checking what a CA issued.

Loads `cryptography`: used by citadel, the sidecar's enrollment child process and tests, never by the sidecar.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from shared.identity.enrollment import CertificateError, Enrollment, IssuedCertificate, certificates_der

__all__ = [
    "IssuedCertificate",
    "build_csr",
    "enrollment_of",
    "issuing_root_der",
    "new_private_key",
    "private_key_pem",
    "spiffe_id_of_cert",
    "spiffe_uris",
]


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


def issuing_root_der(top: x509.Certificate, roots_pem: bytes) -> bytes | None:
    """The first certificate of `roots_pem` (DER) that is `top` or directly issued it; None when none did."""
    try:
        candidates = certificates_der(roots_pem)
    except ValueError:
        return None
    for der in candidates:
        try:
            root = x509.load_der_x509_certificate(der)
        except ValueError:
            continue
        if root == top:
            return der
        try:
            top.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return der
    return None


def enrollment_of(
    spiffe_id: str, key: ec.EllipticCurvePrivateKey, issued: IssuedCertificate, known_roots_pem: bytes = b""
) -> Enrollment:
    """What a CA issued for `key`, checked before anyone uses it: a readable chain whose leaf names exactly
    `spiffe_id` (its single SPIFFE URI SAN) and carries `key`'s public key; raises CertificateError otherwise.
    The issuing root is looked for in the returned bundle, then in `known_roots_pem` (the roots we trust already).
    Expiry is the caller's to check, against its own clock."""
    if not issued.chain_pem:
        raise CertificateError("the certificate source returned an empty chain")
    try:
        chain = [x509.load_pem_x509_certificate(pem) for pem in issued.chain_pem]
        found = spiffe_id_of_cert(chain[0])
        leaf_key = chain[0].public_key()
    except ValueError as err:
        raise CertificateError(f"the issued certificate is unreadable: {err}") from None
    if found != spiffe_id:
        raise CertificateError(f"issued certificate names {found!r}, expected {spiffe_id!r}")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf_key.public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise CertificateError("issued certificate carries another public key than ours")
    issuer = issuing_root_der(chain[-1], issued.trust_bundle_pem) or issuing_root_der(chain[-1], known_roots_pem)
    return Enrollment(private_key_pem(key), issued.chain_pem, issued.trust_bundle_pem, issued.not_after, issuer)
