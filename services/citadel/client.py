"""The proxy's side of citadel: send a CSR over TLS (token or renewal proof) and get an IssuedCertificate back."""

from __future__ import annotations

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.citadel.renewal import CLIENT_CERT_METADATA, RENEWAL_PROOF_METADATA, sign_renewal
from shared.identity.svid import IssuedCertificate
from shared.proto import citadel_pb2, citadel_pb2_grpc

DEFAULT_TIMEOUT_SECONDS = 10.0
REFUSAL_CODES = frozenset(
    {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT}
)


class CertificateRefused(Exception):
    """Citadel answered and said no; retrying the same request will not help. `reason` is citadel's."""

    def __init__(self, reason: str, code: str = "") -> None:
        super().__init__(f"{code}: {reason}" if code else reason)
        self.reason = reason
        self.code = code


class CitadelUnavailable(ConnectionError):
    """Citadel could not be reached or failed internally; retry with backoff."""


class CitadelClient:
    """One TLS channel to citadel, verified against `trust_bundle_pem` under the name `server_name`."""

    def __init__(
        self,
        address: str,
        trust_bundle_pem: bytes,
        server_name: str = "citadel",
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if not trust_bundle_pem.strip():
            raise ValueError("trust_bundle_pem is empty; citadel's certificate could not be verified")
        self._address = address
        self._timeout = timeout_seconds
        credentials = grpc.ssl_channel_credentials(root_certificates=trust_bundle_pem)
        self._channel = grpc.aio.secure_channel(
            address, credentials, options=[("grpc.ssl_target_name_override", server_name)]
        )
        self._stub = citadel_pb2_grpc.CertificateServiceStub(self._channel)  # type: ignore[no-untyped-call]

    async def create_certificate(
        self,
        csr_pem: bytes,
        *,
        token: str | None = None,
        ttl_seconds: int = 0,
        client_chain_pem: bytes | None = None,
        client_key_pem: bytes | None = None,
    ) -> IssuedCertificate:
        """First issue with `token`, or renewal with the current chain and key; raises CertificateRefused."""
        metadata: list[tuple[str, str | bytes]] = []
        if client_chain_pem is not None or client_key_pem is not None:
            if client_chain_pem is None or client_key_pem is None:
                raise ValueError("renewal needs both client_chain_pem and client_key_pem")
            metadata.append((CLIENT_CERT_METADATA, _leaf_of(client_chain_pem)))
            metadata.append((RENEWAL_PROOF_METADATA, sign_renewal(client_key_pem, csr_pem)))
        request = citadel_pb2.CreateCertificateRequest(
            csr_pem=csr_pem.decode("ascii"), ttl_seconds=ttl_seconds, token=token or ""
        )
        try:
            response = await self._stub.CreateCertificate(request, metadata=metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() in REFUSAL_CODES:
                raise CertificateRefused(error.details() or "", error.code().name) from None
            raise CitadelUnavailable(f"citadel at {self._address}: {error.code().name}: {error.details()}") from None
        return _issued(response, csr_pem)

    async def close(self) -> None:
        await self._channel.close()


def _leaf_of(chain_pem: bytes) -> bytes:
    certs = x509.load_pem_x509_certificates(chain_pem)
    return certs[0].public_bytes(serialization.Encoding.PEM)


def _issued(response: citadel_pb2.CreateCertificateResponse, csr_pem: bytes) -> IssuedCertificate:
    """Check the answer is a certificate for our own key before handing it to the caller."""
    chain = tuple(pem.encode("ascii") for pem in response.cert_chain_pem)
    bundle = b"".join(pem.encode("ascii") for pem in response.trust_bundle_pem)
    if not chain or not bundle:
        raise CitadelUnavailable("citadel returned an empty certificate chain or trust bundle")
    try:
        leaf = x509.load_pem_x509_certificate(chain[0])
    except ValueError as error:
        raise CitadelUnavailable(f"citadel returned an unreadable certificate: {error}") from None
    if leaf.public_key() != x509.load_pem_x509_csr(csr_pem).public_key():
        raise CitadelUnavailable("citadel returned a certificate for a different key than the CSR's")
    return IssuedCertificate(chain_pem=chain, trust_bundle_pem=bundle, not_after=leaf.not_valid_after_utc.timestamp())
