"""Renewal proof: the caller's current certificate plus its key's signature over the new CSR, sent as gRPC metadata.

grpcio's Python server can either require client certificates or not request them at all; it cannot make
them optional, which one port serving both first issue (token, no cert) and renewal (cert) needs. So the
current certificate travels in metadata and possession of its key is proven by signing the CSR being
sent. A replayed proof only ever yields a certificate for the CSR's public key, useless to anyone who does
not hold that key. The whole exchange runs inside TLS that authenticates citadel.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

CLIENT_CERT_METADATA = "isthmus-client-cert-bin"
RENEWAL_PROOF_METADATA = "isthmus-renewal-proof-bin"
PROOF_CONTEXT = b"isthmus citadel renewal v1\x00"
"""Prefix of every signed message, so a renewal signature can never be mistaken for any other signature."""
MAX_PROOF_BYTES = 1024


@dataclass(frozen=True, slots=True)
class RenewalProof:
    cert_pem: bytes
    signature: bytes


def sign_renewal(key_pem: bytes, csr_pem: bytes) -> bytes:
    """Sign `csr_pem` (the exact bytes sent) with the current certificate's private key."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    message = PROOF_CONTEXT + csr_pem
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    raise ValueError(f"client key type {type(key).__name__} cannot sign a renewal proof")


def verify_renewal(public_key: CertificatePublicKeyTypes, csr_pem: bytes, signature: bytes) -> None:
    """Raise cryptography's InvalidSignature (or ValueError for an unusable key) unless the proof holds."""
    if len(signature) > MAX_PROOF_BYTES:
        raise ValueError(f"renewal proof is {len(signature)} bytes; the limit is {MAX_PROOF_BYTES}")
    message = PROOF_CONTEXT + csr_pem
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    elif isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, message)
    else:
        raise ValueError(f"certificate key type {type(public_key).__name__} is not supported for renewal")
