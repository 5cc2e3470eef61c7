"""Between a CA reload (reload.py) and signing with the new CA: its root is announced first, the switch follows.

Signing with a new CA the moment its files load would race the trust bundle: a sidecar renewed in that moment
presents a certificate its callees cannot verify yet (they have not received the new root), and a sidecar that
has not either cannot verify citadel's reissued serving certificate. So a reload only stages the new CA: the
published bundle gains its roots after the current ones while the current CA keeps signing and serving. When
the publisher confirms that bundle is in NATS (`published`) and `grace_seconds` more have passed (time for a
sidecar that missed the message to resync), the staged CA takes over and the bundle is republished with its
roots first, which sidecars read as "the signing root changed" (proxy certs.issued_under_first_root) and renew
onto it within seconds. The replaced CA stays trusted (ca.PreviousCa) for `retain_seconds` from the switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from services.citadel.ca import CertificateAuthority
from shared.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

HANDOVER_GRACE_SECONDS = 60.0
"""Default wait between publishing the announcing bundle and signing with the new CA: a sidecar that missed the
bundle message cross-checks the stored bundle at least this often (proxy trust_bundle.RESYNC_INTERVAL)."""


@dataclass(frozen=True, slots=True)
class StagedCa:
    """A loaded CA waiting for its roots to be published; it succeeds the signing CA with `retain_seconds`."""

    ca: CertificateAuthority
    retain_seconds: float


class CurrentCa:
    """The CA in use, replaced whole; readers take `.ca` once per operation. At most one CA is staged."""

    def __init__(
        self, ca: CertificateAuthority, *, clock: Clock = SYSTEM_CLOCK, grace_seconds: float = HANDOVER_GRACE_SECONDS
    ) -> None:
        self.ca = ca
        self.staged: StagedCa | None = None
        self.changed = asyncio.Event()
        """Set whenever the bundle to publish changes; the trust bundle publisher clears it when it wakes."""
        self._clock = clock
        self._grace = grace_seconds
        self._handover: asyncio.Task[None] | None = None

    def trust_bundle_pem(self) -> bytes:
        """The bundle to publish: the signing CA's, then the roots of a staged CA not already in it."""
        bundle = self.ca.trust_bundle_pem()
        if self.staged is None:
            return bundle
        added = [r.public_bytes(serialization.Encoding.PEM) for r in self.staged.ca.roots]
        return bundle + b"".join(dict.fromkeys(pem for pem in added if pem not in bundle))

    def swap(self, ca: CertificateAuthority) -> None:
        """Sign with `ca` now (any staged CA is dropped)."""
        self._cancel_handover()
        self.staged = None
        self.ca = ca
        self.changed.set()

    def stage(self, ca: CertificateAuthority, retain_seconds: float) -> None:
        """Announce `ca`'s roots; it signs once they are published and the grace has passed. A CA staged
        earlier and not yet signing is replaced (nothing chains to it)."""
        self._cancel_handover()
        self.staged = StagedCa(ca, retain_seconds)
        self.changed.set()

    def published(self, bundle_pem: bytes) -> None:
        """The publisher's confirmation that NATS holds `bundle_pem`; starts the grace when it announces the
        staged CA."""
        staged = self.staged
        if staged is None or bundle_pem != self.trust_bundle_pem():
            return
        if self._handover is not None and not self._handover.done():
            return
        log.info("new CA announced in the trust bundle; signing with it in %.0fs", self._grace)
        self._handover = asyncio.get_running_loop().create_task(self._promote_after_grace(staged))

    def promote(self) -> bool:
        """Sign with the staged CA now; False when none is staged."""
        staged = self.staged
        if staged is None:
            return False
        self.swap(staged.ca.succeeding(self.ca, staged.retain_seconds))
        log.info(
            "signing as %s; the previous CA stays trusted for %.0fs",
            self.ca.root_cert.subject.rfc4514_string(),
            staged.retain_seconds,
        )
        return True

    def retire_previous(self) -> int:
        """The operator's retire-now: sign with a staged CA at once, and trust no replaced CA any more (their
        roots leave the bundle, their certificates and tokens stop authenticating). Returns how many went."""
        self.promote()
        retired = len(self.ca.live_previous())
        self.swap(self.ca.without_previous())
        return retired

    async def _promote_after_grace(self, staged: StagedCa) -> None:
        await self._clock.sleep(self._grace)
        if self.staged is staged:
            self.promote()

    def _cancel_handover(self) -> None:
        handover, self._handover = self._handover, None
        if handover is not None and not handover.done() and handover is not _current_task():
            handover.cancel()


def _current_task() -> asyncio.Task[object] | None:
    with contextlib.suppress(RuntimeError):
        return asyncio.current_task()
    return None


def as_current(ca: CertificateAuthority | CurrentCa) -> CurrentCa:
    return ca if isinstance(ca, CurrentCa) else CurrentCa(ca)
