"""Run-time replacement of citadel's CA files: watch the state directory, validate, then swap the CA whole.

An operator replaces ca-cert.pem, ca-key.pem, cert-chain.pem and root-cert.pem (or extra-roots.pem) in the
state directory. `CaReloader.poll` runs every interval on the injected clock and compares a hash of the
files' contents (and the key file's mode); a change is acted on once it has held for one whole interval, so
files copied one by one are read as a set. `reload` (SIGHUP) acts at once. The new files go through the same
checks as at start (key matches certificate, the chain verifies to root-cert.pem, not expired, CA key 0600)
and must keep the trust domain. Invalid: the current CA keeps signing, the error is logged and counted
(`citadel_ca_reloads_total{result="invalid"}`), and the same content is not retried until it changes again.
Valid: the new CA is staged (handover.py: its roots are published first, it signs once they are out) and then
succeeds the current one, which stays trusted for `retain_seconds` (its roots in the trust bundle, its
certificates and bootstrap tokens still authenticating, see ca.PreviousCa); proxies, seeing a new signing root,
renew onto the new CA without a failed request. A `retire-previous` file in the state directory ends that trust
at once (the operator's switch, e.g. after a key compromise).
"""

from __future__ import annotations

import hashlib
import logging
import stat
from pathlib import Path

from services.citadel.ca import CertificateAuthority
from services.citadel.ca_store import CERT_FILE, CHAIN_FILE, EXTRA_ROOTS_FILE, KEY_FILE, ROOT_FILE, CaStateError
from services.citadel.handover import CurrentCa, as_current
from services.citadel.metrics import CitadelMetrics
from shared.clock import Clock

log = logging.getLogger(__name__)

RELOAD_INTERVAL_SECONDS = 5.0
WATCHED_FILES = (CERT_FILE, KEY_FILE, CHAIN_FILE, ROOT_FILE, EXTRA_ROOTS_FILE)
RETIRE_MARKER = "retire-previous"
"""An operator creates this file in the state directory to stop trusting replaced CAs at once; citadel acts on
it at the next tick or SIGHUP, then deletes it."""

__all__ = ["CaReloader", "CurrentCa", "as_current", "fingerprint"]


def fingerprint(state_dir: Path) -> bytes:
    """A hash of the watched files' contents (absent files count too) and the key file's mode."""
    digest = hashlib.sha256()
    for name in WATCHED_FILES:
        path = state_dir / name
        digest.update(name.encode() + b"\0")
        try:
            digest.update(path.read_bytes())
            if name == KEY_FILE:
                digest.update(b"mode %o" % stat.S_IMODE(path.stat().st_mode))
        except FileNotFoundError:
            digest.update(b"\0absent")
        except OSError as error:
            digest.update(f"\0unreadable {error.errno}".encode())
        digest.update(b"\0")
    return digest.digest()


class CaReloader:
    def __init__(
        self,
        state_dir: Path,
        current: CurrentCa,
        metrics: CitadelMetrics,
        clock: Clock,
        *,
        interval: float = RELOAD_INTERVAL_SECONDS,
        retain_seconds: float | None = None,
        handover: bool = True,
    ) -> None:
        """`retain_seconds`: how long a replaced CA stays trusted (default: the longest leaf TTL, by which time
        every certificate it signed has expired). `handover`: stage a new CA until its roots are published
        (handover.py); False swaps at once."""
        self._state_dir = state_dir
        self._current = current
        self._metrics = metrics
        self._clock = clock
        self._interval = interval
        self._retain = retain_seconds if retain_seconds is not None else float(current.ca.ttl.max_seconds)
        self._handover = handover
        self._seen = fingerprint(state_dir)
        self._pending: bytes | None = None

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self._clock.sleep(self._interval)
            self.poll()

    def poll(self) -> bool:
        """One watch tick; True when a new CA was loaded."""
        self.retire_if_asked()
        now = fingerprint(self._state_dir)
        if now == self._seen:
            self._pending = None
            return False
        if now != self._pending:  # changed since the last tick: wait for the writes to settle
            self._pending = now
            return False
        return self.reload()

    def reload(self) -> bool:
        """Load and validate the files now (SIGHUP); True when a new CA was loaded."""
        self.retire_if_asked()
        now = fingerprint(self._state_dir)
        self._pending = None
        if now == self._seen:
            log.info("CA files in %s unchanged; nothing to reload", self._state_dir)
            return False
        self._seen = now
        old = self._current.ca
        try:
            new = CertificateAuthority.load(
                self._state_dir, clock=old.clock, ttl=old.ttl, trust_domain=old.trust_domain
            )
            if new.trust_domain != old.trust_domain:
                raise CaStateError(f"the new CA is for trust domain {new.trust_domain!r}, not {old.trust_domain!r}")
        except Exception as error:  # any failure keeps the CA in use: never sign with a broken one
            self._metrics.ca_reloads.labels("invalid").inc()
            log.error("CA files in %s rejected, still signing with the current CA: %s", self._state_dir, error)
            return False
        self._metrics.ca_reloads.labels("applied").inc()
        subject = new.root_cert.subject.rfc4514_string()
        if self._handover:
            self._current.stage(new, self._retain)
            log.info("CA reloaded from %s: %s announced, signs once its roots are published", self._state_dir, subject)
        else:
            self._current.swap(new.succeeding(old, self._retain))
            log.info("CA reloaded from %s: signing as %s", self._state_dir, subject)
        return True

    def retire_if_asked(self) -> bool:
        """Act on the retire-previous marker: trust no replaced CA from now on. True when the marker was there."""
        marker = self._state_dir / RETIRE_MARKER
        if not marker.exists():
            return False
        retired = self._current.retire_previous()
        marker.unlink(missing_ok=True)
        log.warning("%s: retired %d replaced CA(s) at once; only the current CA is trusted", marker, retired)
        return True
