"""The CA handover: a reloaded CA is announced in the bundle first and signs only once that bundle is published
and the grace has passed; the operator's retire-previous ends trust in replaced CAs at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from services.citadel.authenticate import Unauthenticated, authenticate
from services.citadel.ca import CertificateAuthority, TtlPolicy
from services.citadel.handover import CurrentCa
from services.citadel.metrics import CitadelMetrics
from services.citadel.reload import RETIRE_MARKER, CaReloader
from services.citadel.renewal import RenewalProof, sign_renewal
from services.citadel.testing import new_plugin_ca, pem, write_plugin_ca
from shared.clock import FakeClock
from shared.identity import SpiffeId
from shared.identity.svid import build_csr, new_private_key, private_key_pem

WEB = SpiffeId("cluster.local", "shop", "web")
GRACE = 30.0
RETAIN = 3600.0


class Mesh:
    def __init__(self, state: Path) -> None:
        self.clock = FakeClock(start=time.time())
        self.state = state
        self.first = new_plugin_ca("first", clock=self.clock)
        self.second = new_plugin_ca("second", clock=self.clock)
        write_plugin_ca(state, self.first)
        ca = CertificateAuthority.load(state, clock=self.clock, ttl=TtlPolicy(7200, 7200))
        self.current = CurrentCa(ca, clock=self.clock, grace_seconds=GRACE)
        self.reloader = CaReloader(state, self.current, CitadelMetrics(), self.clock, retain_seconds=RETAIN)

    def signer(self) -> str:
        return self.current.ca.root_cert.subject.rfc4514_string()

    async def reload_second(self) -> None:
        write_plugin_ca(self.state, self.second)
        assert self.reloader.reload()
        await asyncio.sleep(0)

    async def publish(self, bundle: bytes) -> None:
        """The publisher's confirmation; then let a started grace timer begin sleeping on the clock."""
        self.current.published(bundle)
        await asyncio.sleep(0)

    def renews(self, leaf_pem: bytes, key_pem: bytes) -> bool:
        csr = build_csr(new_private_key(), WEB.uri)
        proof = RenewalProof(cert_pem=leaf_pem, signature=sign_renewal(key_pem, csr))
        try:
            authenticate(self.current.ca, "", proof, csr, self.clock, None)
        except Unauthenticated:
            return False
        return True


@pytest.fixture
def mesh(tmp_path: Path) -> Mesh:
    return Mesh(tmp_path / "citadel")


async def test_new_ca_signs_only_after_its_roots_were_published_for_the_grace(mesh: Mesh) -> None:
    await mesh.reload_second()
    announced = pem(mesh.first.root, mesh.second.root)
    assert mesh.current.trust_bundle_pem() == announced
    assert mesh.signer() == "CN=first intermediate"

    await mesh.clock.advance(GRACE * 10)  # unpublished: time alone does not switch
    await mesh.publish(pem(mesh.first.root))  # an older bundle confirmed: not the announcement
    await mesh.clock.advance(GRACE * 10)
    assert mesh.signer() == "CN=first intermediate"

    await mesh.publish(announced)
    await mesh.clock.advance(GRACE - 1)
    assert mesh.signer() == "CN=first intermediate"
    changed_before = mesh.current.changed.is_set()
    mesh.current.changed.clear()
    await mesh.clock.advance(1)
    assert mesh.signer() == "CN=second intermediate"
    assert mesh.current.changed.is_set() and changed_before  # the publisher is woken for both bundles
    assert mesh.current.trust_bundle_pem() == pem(mesh.second.root, mesh.first.root)  # new signing root first


async def test_a_second_reload_during_the_grace_replaces_the_staged_ca(mesh: Mesh) -> None:
    await mesh.reload_second()
    await mesh.publish(mesh.current.trust_bundle_pem())
    third = new_plugin_ca("third", clock=mesh.clock)
    write_plugin_ca(mesh.state, third)
    assert mesh.reloader.reload()
    await mesh.clock.advance(GRACE * 2)
    assert mesh.signer() == "CN=first intermediate"  # the third was never published
    assert mesh.current.trust_bundle_pem() == pem(mesh.first.root, third.root)
    await mesh.publish(mesh.current.trust_bundle_pem())
    await mesh.clock.advance(GRACE)
    assert mesh.signer() == "CN=third intermediate"


async def test_retire_previous_marker_ends_trust_in_the_replaced_ca_at_once(mesh: Mesh) -> None:
    key = new_private_key()
    old_leaf = mesh.current.ca.sign_csr(build_csr(key, WEB.uri), WEB, 0)[0]
    await mesh.reload_second()
    await mesh.publish(mesh.current.trust_bundle_pem())
    await mesh.clock.advance(GRACE)
    assert mesh.signer() == "CN=second intermediate"
    assert mesh.renews(old_leaf, private_key_pem(key))  # the replaced CA is still trusted

    (mesh.state / RETIRE_MARKER).touch()
    assert mesh.reloader.poll() is False  # no new files; the marker alone is acted on
    assert not (mesh.state / RETIRE_MARKER).exists()
    assert mesh.current.trust_bundle_pem() == pem(mesh.second.root)
    assert not mesh.renews(old_leaf, private_key_pem(key))
    assert mesh.current.changed.is_set()


async def test_retire_previous_during_the_grace_switches_at_once(mesh: Mesh) -> None:
    await mesh.reload_second()
    (mesh.state / RETIRE_MARKER).touch()
    mesh.reloader.reload()  # SIGHUP
    assert mesh.signer() == "CN=second intermediate"
    assert mesh.current.trust_bundle_pem() == pem(mesh.second.root)
