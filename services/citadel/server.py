"""Citadel's gRPC front: authenticates each CreateCertificate call, then has the CA sign the CSR, over TLS."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence
from typing import NoReturn

import grpc

from services.citadel.authenticate import Unauthenticated, authenticate
from services.citadel.ca import CertificateAuthority
from services.citadel.csr import CsrRefused, IdentityMismatch
from services.citadel.metrics import CitadelMetrics
from services.citadel.reload import CurrentCa, as_current
from services.citadel.renewal import CLIENT_CERT_METADATA, RENEWAL_PROOF_METADATA, RenewalProof
from shared.clock import SYSTEM_CLOCK, Clock
from shared.proto import citadel_pb2, citadel_pb2_grpc

log = logging.getLogger(__name__)

SERVER_DNS_NAMES = ("localhost", "citadel")
SERVER_IPS = ("127.0.0.1",)
SERVER_CERT_TTL_SECONDS = 365 * 24 * 3600
"""Citadel's own serving cert is reissued on every start; a year covers any realistic uptime."""
MAX_MESSAGE_BYTES = 64 * 1024


class CertificateService(citadel_pb2_grpc.CertificateServiceServicer):
    """One RPC: authenticate, check the CSR asks for the authenticated identity, sign."""

    def __init__(
        self,
        ca: CertificateAuthority | CurrentCa,
        clock: Clock = SYSTEM_CLOCK,
        revoked: Callable[[str], bool] | None = None,
        metrics: CitadelMetrics | None = None,
    ) -> None:
        """`revoked(jti)`: the token denylist (None: no revocation check, e.g. tests without NATS)."""
        self._current = as_current(ca)
        self._clock = clock
        self._revoked = revoked
        self._metrics = metrics or CitadelMetrics()

    async def CreateCertificate(
        self, request: citadel_pb2.CreateCertificateRequest, context: grpc.aio.ServicerContext
    ) -> citadel_pb2.CreateCertificateResponse:
        refused_by = self._metrics.refused
        ca = self._current.ca  # one CA for the whole call, even if a reload swaps it meanwhile
        try:
            chain = self._issue(ca, request, _renewal_proof(context))
        except Unauthenticated as refused:
            refused_by.labels(refused.kind).inc()
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, refused.reason)
        except IdentityMismatch as refused:
            refused_by.labels("identity_mismatch").inc()
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED, refused.reason)
        except CsrRefused as refused:
            refused_by.labels("bad_csr").inc()
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, refused.reason)
        except Exception:
            refused_by.labels("internal").inc()
            log.exception("CreateCertificate failed")
            await _abort(context, grpc.StatusCode.INTERNAL, "citadel could not sign the certificate")
        return citadel_pb2.CreateCertificateResponse(
            cert_chain_pem=[pem.decode("ascii") for pem in chain],
            trust_bundle_pem=[self._current.trust_bundle_pem().decode("ascii")],
        )

    def _issue(
        self, ca: CertificateAuthority, request: citadel_pb2.CreateCertificateRequest, renewal: RenewalProof | None
    ) -> tuple[bytes, ...]:
        csr_pem = request.csr_pem.encode("utf-8")
        identity = authenticate(ca, request.token, renewal, csr_pem, self._clock, self._revoked)
        chain = ca.sign_csr(csr_pem, identity, request.ttl_seconds)  # refuses a CSR for anyone else
        how = "token" if request.token else "renewal"
        self._metrics.signed.labels(how).inc()
        log.info("issued %s (%s)", identity.uri, how)
        return chain


class CitadelServer:
    """The gRPC server: TLS with citadel's own cert; callers authenticate in the request (see renewal.py).
    The serving certificate is reissued by the new CA at the first handshake after a CA swap."""

    def __init__(
        self,
        ca: CertificateAuthority | CurrentCa,
        *,
        extra_sans: Sequence[str] = (),
        clock: Clock = SYSTEM_CLOCK,
        revoked: Callable[[str], bool] | None = None,
        metrics: CitadelMetrics | None = None,
    ) -> None:
        self.current = as_current(ca)
        self._clock = clock
        self._revoked = revoked
        self.metrics = metrics or CitadelMetrics()
        self.metrics.root_expiry.set_function(lambda: self.current.ca.root_not_after())
        self.metrics.trust_bundle_roots.set_function(
            lambda: self.current.trust_bundle_pem().count(b"-----BEGIN CERTIFICATE-----")
        )
        self._serving_for: CertificateAuthority | None = None
        self._dns_names, self._ips = split_sans([*SERVER_DNS_NAMES, *SERVER_IPS, *extra_sans])
        self._server: grpc.aio.Server | None = None

    async def start(self, listen: str) -> int:
        """Bind `host:port` (port 0 picks a free one) and serve; returns the bound port."""
        credentials = grpc.dynamic_ssl_server_credentials(
            self._serving_configuration(), self._fetch_serving_configuration, require_client_authentication=False
        )
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ]
        )
        citadel_pb2_grpc.add_CertificateServiceServicer_to_server(  # type: ignore[no-untyped-call]
            CertificateService(self.current, self._clock, self._revoked, self.metrics), server
        )
        port = int(server.add_secure_port(listen, credentials))
        if port == 0:
            raise OSError(f"citadel cannot listen on {listen}")
        await server.start()
        self._server = server
        return port

    def _serving_configuration(self) -> grpc.ServerCertificateConfiguration:
        ca = self.current.ca
        key_pem, chain = ca.issue_server_certificate(self._dns_names, self._ips, SERVER_CERT_TTL_SECONDS)
        self._serving_for = ca
        return grpc.ssl_server_certificate_configuration([(key_pem, b"".join(chain))])

    def _fetch_serving_configuration(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: a new configuration after a CA swap, else None (keep)."""
        if self.current.ca is self._serving_for:
            return None
        try:
            return self._serving_configuration()
        except Exception:  # keep serving the previous certificate rather than fail every handshake
            log.exception("cannot reissue citadel's serving certificate")
            return None

    async def stop(self, grace: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, reason: str) -> NoReturn:
    log.info("refused CreateCertificate from %s: %s: %s", context.peer(), code.name, reason)
    await context.abort(code, reason)
    raise AssertionError("context.abort returned")  # it always raises


def _renewal_proof(context: grpc.aio.ServicerContext) -> RenewalProof | None:
    """The renewal proof from the call's metadata; None when either half is missing."""
    metadata = {key: value for key, value in (context.invocation_metadata() or ())}
    cert_pem = metadata.get(CLIENT_CERT_METADATA)
    signature = metadata.get(RENEWAL_PROOF_METADATA)
    if not isinstance(cert_pem, bytes) or not isinstance(signature, bytes):
        return None
    return RenewalProof(cert_pem=cert_pem, signature=signature)


def split_sans(sans: Sequence[str]) -> tuple[list[str], list[str]]:
    """Sort `--san` values into DNS names and IP addresses, dropping duplicates."""
    dns: list[str] = []
    ips: list[str] = []
    for san in sans:
        try:
            ip = str(ipaddress.ip_address(san))
        except ValueError:
            if san not in dns:
                dns.append(san)
        else:
            if ip not in ips:
                ips.append(ip)
    return dns, ips
