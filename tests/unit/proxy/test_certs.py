"""Certificate lifecycle on a FakeClock: renewal at half the lifetime with jitter, retries, validation."""

from __future__ import annotations

import asyncio
import random
import ssl
from dataclasses import replace
from typing import Any

import pytest

from services.proxy.certs import CertificateError, CertificateManager, renewal_delay
from services.proxy.enroll_in_process import InProcessEnroller
from services.proxy.tls import TlsContexts, WorkloadIdentity
from shared.clock import FakeClock
from shared.identity.enrollment import Enrollment
from shared.identity.svid import IssuedCertificate, new_private_key, private_key_pem

SPIFFE = "spiffe://cluster.local/ns/default/sa/reviews"
LIFETIME = 1000.0


class FakeSource:
    def __init__(
        self,
        signer: Any,
        clock: FakeClock,
        fail_calls: tuple[int, ...] = (),
        uri: str | list[str] | None = None,
        lifetime: float = LIFETIME,
        other_key: bool = False,
    ):
        self.signer = signer
        self.clock = clock
        self.calls = 0
        self.fail_calls = fail_calls
        self.uri = uri
        self.lifetime = lifetime
        self.other_key = new_private_key().public_key() if other_key else None

    async def issue(self, csr_pem: bytes) -> IssuedCertificate:
        self.calls += 1
        if self.calls in self.fail_calls:
            raise ConnectionError("citadel unavailable")
        issued: IssuedCertificate = self.signer(csr_pem, self.clock.wall() + self.lifetime, self.uri, self.other_key)
        return issued


class SwitchableEnroller:
    def __init__(self, enroller: Any) -> None:
        self.enroller = enroller

    async def enroll(self, spiffe_id: str, current: WorkloadIdentity | None) -> Enrollment:
        enrolled: Enrollment = await self.enroller.enroll(spiffe_id, current)
        return enrolled


class SwappedKeyEnroller:
    """Answers a checked enrollment whose key does not belong to its chain (an enroller bug OpenSSL must catch)."""

    def __init__(self, inner: InProcessEnroller) -> None:
        self.inner = inner

    async def enroll(self, spiffe_id: str, current: WorkloadIdentity | None) -> Enrollment:
        enrolled = await self.inner.enroll(spiffe_id, current)
        return replace(enrolled, key_pem=private_key_pem(new_private_key()))


async def _until(condition: Any) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def test_renewal_delay_is_half_lifetime_minus_jitter() -> None:
    rng = random.Random(1)
    delays = [renewal_delay(LIFETIME, rng) for _ in range(200)]
    assert all(450.0 <= delay <= 500.0 for delay in delays)
    assert max(delays) - min(delays) > 10.0  # jitter actually spreads renewals


async def test_renews_at_half_lifetime(signer: Any) -> None:
    clock = FakeClock()
    identities: list[WorkloadIdentity] = []
    manager = CertificateManager(
        SPIFFE, InProcessEnroller(FakeSource(signer, clock)), clock, random.Random(3), identities.append
    )
    await manager.obtain()
    expected = renewal_delay(LIFETIME, random.Random(3))
    task = asyncio.create_task(manager.run())
    try:
        await asyncio.sleep(0)
        await clock.advance(expected - 1.0)
        await asyncio.sleep(0)
        assert len(identities) == 1
        await clock.advance(1.0)
        await _until(lambda: manager.renewals == 1)
        assert len(identities) == 2
        assert identities[0].key_pem != identities[1].key_pem  # a fresh key per renewal
    finally:
        task.cancel()


async def test_failed_renewal_retries_with_backoff(signer: Any) -> None:
    clock = FakeClock()
    source = FakeSource(signer, clock, fail_calls=(2,))
    manager = CertificateManager(SPIFFE, InProcessEnroller(source), clock, random.Random(5), lambda identity: None)
    await manager.obtain()
    assert manager.next_renewal_at is not None
    task = asyncio.create_task(manager.run())
    try:
        await asyncio.sleep(0)
        await clock.advance(manager.next_renewal_at - clock.wall())
        await _until(lambda: source.calls == 2)
        assert manager.renewals == 0
        await clock.advance(1.0)  # first retry one second later
        await _until(lambda: manager.renewals == 1)
        assert source.calls == 3
    finally:
        task.cancel()


async def test_certificate_for_another_identity_is_refused(signer: Any) -> None:
    clock = FakeClock()
    identities: list[WorkloadIdentity] = []
    source = FakeSource(signer, clock, uri="spiffe://cluster.local/ns/default/sa/other")
    manager = CertificateManager(SPIFFE, InProcessEnroller(source), clock, random.Random(1), identities.append)
    with pytest.raises(CertificateError, match="expected"):
        await manager.obtain()
    assert identities == [] and manager.identity is None


async def test_trust_bundle_update_swaps_contexts_and_bad_bundle_is_rejected(signer: Any) -> None:
    clock = FakeClock()
    tls = TlsContexts()
    manager = CertificateManager(
        SPIFFE, InProcessEnroller(FakeSource(signer, clock)), clock, random.Random(1), tls.update
    )
    identity = await manager.obtain()
    old_client = tls.client()
    with pytest.raises(ssl.SSLError):
        manager.update_trust_bundle(b"-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n")
    assert tls.client() is old_client and manager.identity == identity
    manager.update_trust_bundle(identity.trust_bundle_pem + b"\n")
    assert tls.client() is not old_client


@pytest.mark.parametrize(
    ("source_options", "reason"),
    [
        pytest.param({"uri": []}, "names None", id="no SPIFFE ID"),
        pytest.param({"uri": [SPIFFE, "spiffe://cluster.local/ns/default/sa/other"]}, "names None", id="two IDs"),
        pytest.param({"other_key": True}, "another public key", id="another key"),
        pytest.param({"lifetime": 0.0}, "expired", id="expired"),
    ],
)
async def test_a_certificate_that_fails_the_checks_changes_nothing(
    signer: Any, source_options: dict[str, Any], reason: str
) -> None:
    clock = FakeClock()
    tls = TlsContexts()
    enroller = SwitchableEnroller(InProcessEnroller(FakeSource(signer, clock)))
    manager = CertificateManager(SPIFFE, enroller, clock, random.Random(1), tls.update)
    identity = await manager.obtain()
    enroller.enroller = InProcessEnroller(FakeSource(signer, clock, **source_options))
    with pytest.raises(CertificateError, match=reason):
        await manager.obtain()
    assert manager.identity == identity and tls.identity == identity


async def test_a_key_that_does_not_match_the_chain_fails_the_swap(signer: Any) -> None:
    clock = FakeClock()
    tls = TlsContexts()
    enroller = SwitchableEnroller(InProcessEnroller(FakeSource(signer, clock)))
    manager = CertificateManager(SPIFFE, enroller, clock, random.Random(1), tls.update)
    identity = await manager.obtain()
    client = tls.client()
    enroller.enroller = SwappedKeyEnroller(enroller.enroller)
    with pytest.raises(ssl.SSLError):
        await manager.obtain()
    assert manager.identity == identity and tls.identity == identity and tls.client() is client
