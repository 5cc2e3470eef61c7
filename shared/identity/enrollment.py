"""What enrolling a workload yields, in forms a sidecar reads with the standard library alone.

The X.509 work (key generation, CSR, checking the answer) happens where `cryptography` may be loaded: the
sidecar's enrollment child process, a test, citadel. The sidecar itself keeps PEM bytes and the facts that
work established, and compares certificates as DER bytes.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


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


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A checked certificate: its leaf names exactly the SPIFFE ID asked for and carries `key_pem`'s public key."""

    key_pem: bytes
    chain_pem: tuple[bytes, ...]
    """Leaf first, PEM."""
    trust_bundle_pem: bytes
    """The roots the CA returned."""
    not_after: float
    """Leaf expiry, seconds since the epoch."""
    issuer_root_der: bytes | None
    """The root (DER) that is, or directly issued, the top of the chain; None when no known root did."""


class CertificateError(Exception):
    """An issued certificate we must not use (wrong or missing SPIFFE ID, another key, expired, unreadable)."""


def certificates_der(bundle_pem: bytes) -> list[bytes]:
    """Each PEM certificate in `bundle_pem`, as DER, in order; raises ValueError for a block that does not decode."""
    return [ssl.PEM_cert_to_DER_cert(block.decode("ascii")) for block in _PEM_CERTIFICATE.findall(bundle_pem)]


def first_certificate_der(bundle_pem: bytes) -> bytes | None:
    """The first certificate of a bundle as DER (a trust bundle's first root is the one citadel signs under);
    None when there is none or it does not decode."""
    match = _PEM_CERTIFICATE.search(bundle_pem)
    if match is None:
        return None
    try:
        return ssl.PEM_cert_to_DER_cert(match.group().decode("ascii"))
    except ValueError:
        return None
