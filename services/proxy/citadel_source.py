"""Production CertificateSource: citadel's gRPC call, bootstrap token first, the current certificate after.

The call itself is made by a short-lived child process (csr_child.py), so grpc never loads into the sidecar.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from services.proxy.csr_child import ChildCitadelClient
from services.proxy.tls import WorkloadIdentity
from shared.clock import Clock
from shared.identity.svid import IssuedCertificate

CITADEL_SERVER_NAME = "citadel"
RENEWAL_REFUSED = "UNAUTHENTICATED"
"""Status code name (csr_child.CertificateCallRefused.code) of a renewal citadel does not accept."""

log = logging.getLogger(__name__)


class _CitadelClient(Protocol):
    async def create_certificate(
        self,
        csr_pem: bytes,
        *,
        token: str | None = ...,
        client_chain_pem: bytes | None = ...,
        client_key_pem: bytes | None = ...,
    ) -> IssuedCertificate: ...

    async def close(self) -> None: ...


class CitadelSource:
    """Asks citadel to sign our CSRs; renewals authenticate with the still-valid current certificate."""

    def __init__(
        self,
        address: str,
        trust_bundle: Callable[[], bytes],
        token: str | None,
        current: Callable[[], WorkloadIdentity | None],
        clock: Clock,
    ) -> None:
        self._address = address
        self._trust_bundle = trust_bundle
        self._token = token
        self._current = current
        self._clock = clock
        self._client: _CitadelClient | None = None
        self._client_bundle: bytes | None = None

    async def _client_for(self, bundle: bytes) -> _CitadelClient:
        if self._client is None or self._client_bundle != bundle:
            await self.close()
            self._client = ChildCitadelClient(self._address, bundle, server_name=CITADEL_SERVER_NAME)
            self._client_bundle = bundle
        assert self._client is not None
        return self._client

    async def issue(self, csr_pem: bytes) -> IssuedCertificate:
        client = await self._client_for(self._trust_bundle())
        identity = self._current()
        if identity is not None and identity.not_after > self._clock.wall():
            try:
                return await client.create_certificate(
                    csr_pem,
                    client_chain_pem=b"".join(identity.chain_pem),
                    client_key_pem=identity.key_pem,
                )
            except Exception as err:
                # A certificate citadel no longer accepts (its root was retired): bootstrap again with the token.
                if getattr(err, "code", None) != RENEWAL_REFUSED or not self._token:
                    raise
                log.warning("renewal refused (%s); asking with the bootstrap token", err)
        if not self._token:
            raise RuntimeError("no bootstrap token (--token or --token-file) and no valid certificate to renew with")
        return await client.create_certificate(csr_pem, token=self._token)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
