"""A trust bundle whose first (signing) root did not issue our certificate brings the next renewal forward."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from services.citadel.testing import ca_certificate, pem
from services.proxy.certs import ROOT_ROTATION_SPREAD, CertificateManager, issued_under_first_root
from services.proxy.enroll_in_process import InProcessEnroller
from services.proxy.tls import WorkloadIdentity
from shared.clock import FakeClock
from shared.identity.svid import IssuedCertificate

SPIFFE = "spiffe://cluster.local/ns/default/sa/reviews"
LIFETIME = 1000.0


def other_root() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return pem(ca_certificate("new root", key, None, key, "cluster.local"))


class Source:
    def __init__(self, signer: Any, clock: FakeClock) -> None:
        self.signer, self.clock, self.calls = signer, clock, 0

    async def issue(self, csr_pem: bytes) -> IssuedCertificate:
        self.calls += 1
        issued: IssuedCertificate = self.signer(csr_pem, self.clock.wall() + LIFETIME)
        return issued


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_new_signing_root_renews_within_the_spread(signer: Any) -> None:
    clock = FakeClock()
    identities: list[WorkloadIdentity] = []
    source = Source(signer, clock)
    manager = CertificateManager(SPIFFE, InProcessEnroller(source), clock, random.Random(7), identities.append)
    identity = await manager.obtain()
    ours = identity.trust_bundle_pem
    assert issued_under_first_root(manager.issuer_root_der, ours)
    task = asyncio.create_task(manager.run())
    try:
        await _settle()
        manager.update_trust_bundle(ours + other_root())  # a new root announced: ours still signs
        await clock.advance(ROOT_ROTATION_SPREAD)
        await _settle()
        assert source.calls == 1

        rotated = other_root() + ours  # the new root signs now
        assert not issued_under_first_root(manager.issuer_root_der, rotated)
        manager.update_trust_bundle(rotated)
        await _settle()
        await clock.advance(ROOT_ROTATION_SPREAD)
        await _settle()
        assert source.calls == 2 and manager.renewals == 1
        assert manager.next_renewal_at is not None and manager.next_renewal_at > clock.wall() + LIFETIME / 4
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
