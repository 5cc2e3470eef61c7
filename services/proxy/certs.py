"""Workload certificate lifecycle: Enroller (key, CSR, CA, checks) -> TLS contexts, renewed at half its lifetime.

Holds PEM bytes and the facts the enroller established; never parses X.509 itself, so the sidecar does not
load `cryptography` (production enrollment runs in a child process, csr_child.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Protocol

from services.proxy.tls import WorkloadIdentity
from shared.clock import Clock
from shared.identity.enrollment import CertificateError, Enrollment, first_certificate_der

__all__ = ["CertificateError", "CertificateManager", "Enroller", "issued_under_first_root", "renewal_delay"]

log = logging.getLogger(__name__)

RENEW_FRACTION = 0.5
"""Renew once this share of the certificate's lifetime has passed."""
RENEW_JITTER = 0.1
"""Renewal happens up to this share of the renewal delay early, so a fleet does not renew in lockstep."""
RETRY_INITIAL = 1.0
RETRY_MAX = 60.0
ROOT_ROTATION_SPREAD = 5.0
"""When the trust bundle's first root (citadel's signing root) stops being our issuer, renew within this many
seconds (spread at random, so a fleet does not hit citadel at once): a root rotation reissues promptly."""


def issued_under_first_root(issuer_root_der: bytes | None, bundle_pem: bytes) -> bool:
    """Whether the bundle's first root is the root that issued our chain (recorded at enrollment); True when the
    bundle has no readable first certificate (nothing to compare: leave the schedule alone)."""
    first = first_certificate_der(bundle_pem)
    return first is None or first == issuer_root_der


class Enroller(Protocol):
    """Gets us a certificate: a fresh key, a CSR for `spiffe_id`, the CA's answer, checked (the leaf names exactly
    `spiffe_id` and carries the new key; else CertificateError). `current` is the identity in use, which a CA may
    accept as proof instead of a bootstrap token. Production: csr_child via citadel_source.CitadelEnroller;
    tests and benchmarks: enroll_in_process.InProcessEnroller."""

    async def enroll(self, spiffe_id: str, current: WorkloadIdentity | None) -> Enrollment: ...


def renewal_delay(lifetime: float, rng: random.Random) -> float:
    """Seconds from issue to renewal: half the lifetime, minus up to RENEW_JITTER of that, never negative."""
    base = max(lifetime, 0.0) * RENEW_FRACTION
    return base * (1.0 - RENEW_JITTER * rng.random())


class CertificateManager:
    """Obtains our certificate, keeps it fresh and hands every new identity to `on_identity`."""

    def __init__(
        self,
        spiffe_id: str,
        enroller: Enroller,
        clock: Clock,
        rng: random.Random,
        on_identity: Callable[[WorkloadIdentity], None],
    ) -> None:
        self.spiffe_id = spiffe_id
        self._enroller = enroller
        self._clock = clock
        self._rng = rng
        self._on_identity = on_identity
        self.identity: WorkloadIdentity | None = None
        self.renewals = 0
        self.next_renewal_at: float | None = None
        self.trust_bundle_override: bytes | None = None
        """Roots from the trust-bundle KV key; when set they replace the bundle the enroller returns."""
        self.issuer_root_der: bytes | None = None
        """The root that issued the current certificate, as the enroller found it."""
        self._rotation: asyncio.Task[None] | None = None

    async def obtain(self) -> WorkloadIdentity:
        """One enrollment (a fresh key, a CSR for our SPIFFE ID, the CA's checked answer), then the swap. Raises,
        leaving the identity in use, when enrollment fails, the certificate has expired or OpenSSL refuses it."""
        enrolled = await self._enroller.enroll(self.spiffe_id, self.identity)
        identity = self._identity_of(enrolled)
        issued_at = self._clock.wall()
        self._on_identity(identity)
        self.identity = identity
        self.issuer_root_der = enrolled.issuer_root_der
        self.next_renewal_at = issued_at + renewal_delay(identity.not_after - issued_at, self._rng)
        return identity

    def _identity_of(self, enrolled: Enrollment) -> WorkloadIdentity:
        if not enrolled.chain_pem:
            raise CertificateError("the enroller returned an empty chain")
        if enrolled.not_after <= self._clock.wall():
            raise CertificateError("issued certificate has already expired")
        bundle = self.trust_bundle_override or enrolled.trust_bundle_pem
        return WorkloadIdentity(self.spiffe_id, enrolled.key_pem, enrolled.chain_pem, bundle, enrolled.not_after)

    def update_trust_bundle(self, bundle_pem: bytes) -> None:
        """New roots from the bus: rebuild the contexts around the same key and chain; a new signing root
        (first in the bundle) that did not issue our certificate brings the next renewal forward."""
        if self.identity is not None and self.identity.trust_bundle_pem != bundle_pem:
            updated = self.identity.with_trust_bundle(bundle_pem)
            self._on_identity(updated)  # raises on an unusable bundle, before anything changes
            self.identity = updated
            if not issued_under_first_root(self.issuer_root_der, bundle_pem):
                self._renew_soon(self._rng.uniform(0.0, ROOT_ROTATION_SPREAD))
        self.trust_bundle_override = bundle_pem

    def _renew_soon(self, delay: float) -> None:
        """Renew out of schedule after `delay` (once at a time); needs a running loop (the bundle watch has one)."""
        if self._rotation is not None and not self._rotation.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        log.info("trust bundle has a new signing root: renewing in %.1fs", delay)
        self._rotation = loop.create_task(self._renew_after(delay))

    async def _renew_after(self, delay: float) -> None:
        await self._clock.sleep(delay)
        try:
            await self.obtain()
        except Exception as err:  # the regular schedule keeps retrying
            log.warning("renewal for the new root failed (%s); the regular schedule will retry", err)
            return
        self.renewals += 1

    async def run(self) -> None:
        """Renew forever; failed renewals retry with backoff while the current certificate is still valid."""
        try:
            await self._renew_forever()
        finally:
            if self._rotation is not None:
                self._rotation.cancel()

    async def _renew_forever(self) -> None:
        backoff = RETRY_INITIAL
        while True:
            if self.next_renewal_at is None:
                raise RuntimeError("CertificateManager.run() before the first obtain()")
            await self._clock.sleep(max(self.next_renewal_at - self._clock.wall(), 0.0))
            if self.next_renewal_at > self._clock.wall():
                continue  # renewed meanwhile (a root rotation): sleep until the new time
            try:
                await self.obtain()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                remaining = (self.identity.not_after if self.identity else 0.0) - self._clock.wall()
                wait = min(backoff, max(remaining / 4, RETRY_INITIAL))
                log.warning("certificate renewal failed (%s); retrying in %.1fs", err, wait)
                self.next_renewal_at = self._clock.wall() + wait
                backoff = min(backoff * 2, RETRY_MAX)
                continue
            backoff = RETRY_INITIAL
            self.renewals += 1
            log.info("certificate renewed; next renewal in %.0fs", self.next_renewal_at - self._clock.wall())
