"""Who is asking citadel for a certificate: a bootstrap token (first issue) or the caller's current cert (renewal)."""

from __future__ import annotations

import datetime
from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from services.citadel.ca import CertificateAuthority
from services.citadel.renewal import RenewalProof, verify_renewal
from services.citadel.tokens import TokenRefused, verify_token
from shared.clock import Clock
from shared.identity import SpiffeId, parse_spiffe_id
from shared.identity.spiffe import InvalidSpiffeId
from shared.identity.svid import spiffe_uris


class Unauthenticated(Exception):
    """Neither a valid token nor a valid client certificate came with the request; `kind` labels the metric."""

    def __init__(self, reason: str, kind: str = "unauthenticated") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def authenticate(
    ca: CertificateAuthority,
    token: str,
    renewal: RenewalProof | None,
    csr_pem: bytes,
    clock: Clock,
    revoked: Callable[[str], bool] | None = None,
) -> SpiffeId:
    """The identity the caller proved. A token, when sent, wins, so a workload whose cert lapsed can re-bootstrap."""
    if token:
        try:
            namespace, service_account = verify_token(ca, token, clock, revoked)
        except TokenRefused as refused:
            kind = "token_revoked" if refused.reason == "token revoked" else "bad_token"
            raise Unauthenticated(f"bootstrap token refused: {refused.reason}", kind) from None
        return SpiffeId(ca.trust_domain, namespace, service_account)
    if renewal is not None:
        return identity_of_renewal(ca, renewal, csr_pem, clock)
    raise Unauthenticated("send a bootstrap token, or your current certificate and renewal proof")


def identity_of_renewal(ca: CertificateAuthority, renewal: RenewalProof, csr_pem: bytes, clock: Clock) -> SpiffeId:
    """The SPIFFE ID of a certificate this CA issued, valid now, whose key signed `csr_pem`."""
    try:
        cert = x509.load_pem_x509_certificate(renewal.cert_pem)
    except ValueError:
        raise Unauthenticated("client certificate is not valid PEM") from None
    identity = identity_of_client_cert(ca, cert, clock)
    try:
        verify_renewal(cert.public_key(), csr_pem, renewal.signature)
    except (InvalidSignature, ValueError, TypeError):
        raise Unauthenticated("renewal proof is not a signature of this CSR by the certificate's key") from None
    return identity


def identity_of_client_cert(ca: CertificateAuthority, cert: x509.Certificate, clock: Clock) -> SpiffeId:
    """The SPIFFE ID of a workload cert this CA issued and that is valid now; Unauthenticated otherwise."""
    if not any(_issued_by(cert, issuer) for issuer in ca.renewal_issuers):
        raise Unauthenticated("client certificate was not issued by this citadel's CA")
    now = datetime.datetime.fromtimestamp(clock.wall(), tz=datetime.UTC)
    if now < cert.not_valid_before_utc:
        raise Unauthenticated("client certificate is not valid yet")
    if now >= cert.not_valid_after_utc:
        raise Unauthenticated("client certificate expired; bootstrap again with a token")
    _require_client_leaf(cert)
    uris = spiffe_uris(cert)
    if len(uris) != 1:
        raise Unauthenticated("client certificate must carry exactly one SPIFFE URI")
    try:
        identity = parse_spiffe_id(uris[0])
    except InvalidSpiffeId as error:
        raise Unauthenticated(f"client certificate SPIFFE URI: {error}") from None
    if identity.trust_domain != ca.trust_domain:
        raise Unauthenticated(f"client certificate is for trust domain {identity.trust_domain}")
    return identity


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Directly issued by `issuer` (this CA, or a root still in extra-roots.pem during a rotation)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _require_client_leaf(cert: x509.Certificate) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise Unauthenticated("client certificate is not a workload certificate") from None
    if constraints.ca or ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise Unauthenticated("client certificate is not a workload client certificate")
