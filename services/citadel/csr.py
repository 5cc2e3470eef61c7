"""First step of issuing: parse a workload's PEM CSR and check it is well-formed and asks for one SPIFFE ID."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from shared.identity import SpiffeId, parse_spiffe_id
from shared.identity.spiffe import InvalidSpiffeId

MAX_CSR_BYTES = 8 * 1024
MIN_RSA_BITS = 2048
ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)


class CsrRefused(ValueError):
    """The CSR cannot be signed; `reason` says why in words a workload operator can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdentityMismatch(CsrRefused):
    """The CSR is well-formed but asks for an identity the caller may not have."""


@dataclass(frozen=True, slots=True)
class ParsedCsr:
    csr: x509.CertificateSigningRequest
    identity: SpiffeId

    @property
    def public_key(self) -> CertificatePublicKeyTypes:
        return self.csr.public_key()


def parse_csr(csr_pem: bytes) -> ParsedCsr:
    """Parse and check a CSR: size, PEM, signature, key type, exactly one SAN that is a SPIFFE URI."""
    if len(csr_pem) > MAX_CSR_BYTES:
        raise CsrRefused(f"csr_pem is {len(csr_pem)} bytes; the limit is {MAX_CSR_BYTES}")
    if not csr_pem.strip():
        raise CsrRefused("csr_pem is empty")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as error:
        raise CsrRefused(f"csr_pem is not a PEM certificate signing request: {error}") from None
    try:
        signature_ok = csr.is_signature_valid
    except Exception as error:  # unsupported algorithms surface as assorted exception types
        raise CsrRefused(f"csr_pem signature cannot be checked: {error}") from None
    if not signature_ok:
        raise CsrRefused("csr_pem signature does not match its public key")
    _check_public_key(csr)
    return ParsedCsr(csr=csr, identity=_requested_identity(csr))


def check_identity(parsed: ParsedCsr, allowed: SpiffeId) -> None:
    """Raise IdentityMismatch unless the CSR asks for exactly `allowed`."""
    if parsed.identity != allowed:
        raise IdentityMismatch(f"CSR asks for {parsed.identity.uri} but the caller is {allowed.uri}")


def _check_public_key(csr: x509.CertificateSigningRequest) -> None:
    try:
        key = csr.public_key()
    except Exception as error:  # unknown key algorithms raise from deep inside the parser
        raise CsrRefused(f"csr_pem public key is not supported: {error}") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ALLOWED_CURVES):
            raise CsrRefused(f"csr_pem uses curve {key.curve.name}; use P-256 or P-384")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CsrRefused(f"csr_pem RSA key is {key.key_size} bits; the minimum is {MIN_RSA_BITS}")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise CsrRefused(f"csr_pem key type {type(key).__name__} is not supported; use ECDSA P-256")


def _requested_identity(csr: x509.CertificateSigningRequest) -> SpiffeId:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CsrRefused("csr_pem has no subjectAltName; it must carry the workload's SPIFFE URI") from None
    except ValueError as error:  # duplicate or malformed extensions
        raise CsrRefused(f"csr_pem extensions are malformed: {error}") from None
    names = list(san)
    if len(names) != 1:
        raise CsrRefused(f"csr_pem has {len(names)} subjectAltNames; it must have only the SPIFFE URI")
    name = names[0]
    if not isinstance(name, x509.UniformResourceIdentifier):
        raise CsrRefused(f"csr_pem subjectAltName is {type(name).__name__}; it must be the SPIFFE URI")
    try:
        return parse_spiffe_id(name.value)
    except InvalidSpiffeId as error:
        raise CsrRefused(f"csr_pem subjectAltName: {error}") from None
