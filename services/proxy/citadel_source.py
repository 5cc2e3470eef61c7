"""Production Enroller: citadel, asked by a child process with the bootstrap token first, the current certificate
after (csr_child.py makes the key, the CSR and the call, and checks the answer)."""

from __future__ import annotations

from collections.abc import Callable

from services.proxy.csr_child import EnrollmentRequest, enroll_in_child
from services.proxy.tls import WorkloadIdentity
from shared.clock import Clock
from shared.identity.enrollment import Enrollment

CITADEL_SERVER_NAME = "citadel"


class CitadelEnroller:
    """Enrolls with citadel; renewals authenticate with the still-valid current certificate, and fall back to the
    bootstrap token when citadel no longer accepts it (UNAUTHENTICATED)."""

    def __init__(
        self,
        address: str,
        trust_bundle: Callable[[], bytes],
        token: str | None,
        clock: Clock,
        server_name: str = CITADEL_SERVER_NAME,
    ) -> None:
        """`trust_bundle` gives the roots citadel's serving certificate must chain to, at each enrollment."""
        self._address = address
        self._trust_bundle = trust_bundle
        self._token = token
        self._clock = clock
        self._server_name = server_name

    async def enroll(self, spiffe_id: str, current: WorkloadIdentity | None) -> Enrollment:
        renewable = current is not None and current.not_after > self._clock.wall()
        if not renewable and not self._token:
            raise RuntimeError("no bootstrap token (--token or --token-file) and no valid certificate to renew with")
        request = EnrollmentRequest(
            address=self._address,
            server_name=self._server_name,
            trust_bundle_pem=self._trust_bundle(),
            spiffe_id=spiffe_id,
            token=self._token,
            renew_chain_pem=b"".join(current.chain_pem) if current is not None and renewable else None,
            renew_key_pem=current.key_pem if current is not None and renewable else None,
        )
        return await enroll_in_child(request)
