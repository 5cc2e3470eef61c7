"""Enrollment inside this process, for tests and benchmarks: key, CSR and checks here, signed by a CertificateSource.

Loads `cryptography` (about 9 MB resident), which is why a production sidecar enrolls through its child process
(citadel_source.CitadelEnroller, csr_child.py) instead; nothing the sidecar's command line runs imports this.
"""

from __future__ import annotations

from typing import Protocol

from services.proxy.tls import WorkloadIdentity
from shared.identity.enrollment import Enrollment, IssuedCertificate
from shared.identity.svid import build_csr, enrollment_of, new_private_key


class CertificateSource(Protocol):
    """Who signs our CSRs in process: a test CA, or citadel's CA object (services/citadel/testing.py)."""

    async def issue(self, csr_pem: bytes) -> IssuedCertificate: ...


class InProcessEnroller:
    """The Enroller (certs.py) over a CertificateSource: a fresh key per call, the answer checked as csr_child
    checks citadel's. The source is trusted to authenticate us, so `current` only adds its roots as known ones."""

    def __init__(self, source: CertificateSource) -> None:
        self.source = source

    async def enroll(self, spiffe_id: str, current: WorkloadIdentity | None) -> Enrollment:
        key = new_private_key()
        issued = await self.source.issue(build_csr(key, spiffe_id))
        known_roots = current.trust_bundle_pem if current is not None else b""
        return enrollment_of(spiffe_id, key, issued, known_roots)
