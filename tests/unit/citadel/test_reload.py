"""Replacing the CA files at run time: settle, validate, keep the old CA on error, overlap then retire the old root."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from cryptography import x509

from services.citadel.authenticate import Unauthenticated, authenticate
from services.citadel.ca import CertificateAuthority, TtlPolicy
from services.citadel.ca_store import CERT_FILE, KEY_FILE
from services.citadel.metrics import CitadelMetrics
from services.citadel.reload import CaReloader, CurrentCa
from services.citadel.renewal import RenewalProof, sign_renewal
from services.citadel.testing import PluginCa, new_plugin_ca, pem, write_plugin_ca
from services.citadel.tokens import create_token, verify_token
from shared.clock import FakeClock
from shared.identity import SpiffeId
from shared.identity.svid import build_csr, new_private_key, private_key_pem

WEB = SpiffeId("cluster.local", "shop", "web")
RETAIN = 3600.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=time.time())


class Setup:
    def __init__(self, state: Path, clock: FakeClock) -> None:
        self.state = state
        self.clock = clock
        self.first = new_plugin_ca("first", clock=clock)
        write_plugin_ca(state, self.first)
        ca = CertificateAuthority.load(state, clock=clock, ttl=TtlPolicy(7200, 7200))
        self.current = CurrentCa(ca)
        self.metrics = CitadelMetrics()
        self.reloader = CaReloader(
            state, self.current, self.metrics, clock, interval=5.0, retain_seconds=RETAIN, handover=False
        )

    def count(self, result: str) -> float:
        return self.metrics.registry.get_sample_value("citadel_ca_reloads_total", {"result": result}) or 0.0

    def issue(self) -> tuple[bytes, bytes]:
        """(leaf PEM, key PEM) for WEB from the CA in use."""
        key = new_private_key()
        chain = self.current.ca.sign_csr(build_csr(key, WEB.uri), WEB, 0)
        return chain[0], private_key_pem(key)

    def renew(self, leaf_pem: bytes, key_pem: bytes) -> SpiffeId:
        csr = build_csr(new_private_key(), WEB.uri)
        proof = RenewalProof(cert_pem=leaf_pem, signature=sign_renewal(key_pem, csr))
        return authenticate(self.current.ca, "", proof, csr, self.clock, None)


@pytest.fixture
def setup(tmp_path: Path, clock: FakeClock) -> Setup:
    return Setup(tmp_path / "citadel", clock)


def _issuer(leaf_pem: bytes) -> x509.Name:
    return x509.load_pem_x509_certificate(leaf_pem).issuer


def test_unchanged_files_do_nothing(setup: Setup) -> None:
    before = setup.current.ca
    assert setup.reloader.poll() is False and setup.reloader.reload() is False
    assert setup.current.ca is before and setup.count("applied") == setup.count("invalid") == 0


def test_a_change_applies_once_it_held_for_a_whole_interval(setup: Setup) -> None:
    second = new_plugin_ca("second", clock=setup.clock)
    write_plugin_ca(setup.state, second)
    assert setup.reloader.poll() is False  # just changed: maybe half written
    assert setup.current.ca.root_cert == setup.first.intermediate
    assert setup.reloader.poll() is True
    assert setup.current.ca.root_cert == second.intermediate
    assert setup.current.changed.is_set()
    assert setup.count("applied") == 1


def test_sighup_reload_applies_at_once(setup: Setup) -> None:
    write_plugin_ca(setup.state, new_plugin_ca("second", clock=setup.clock))
    assert setup.reloader.reload() is True


def test_half_written_set_is_waited_for_not_counted(setup: Setup) -> None:
    second = new_plugin_ca("second", clock=setup.clock)
    (setup.state / CERT_FILE).write_bytes(pem(second.intermediate))  # key not copied yet
    assert setup.reloader.poll() is False
    write_plugin_ca(setup.state, second)
    assert setup.reloader.poll() is False
    assert setup.reloader.poll() is True
    assert setup.count("invalid") == 0


def _mismatched(setup: Setup) -> None:
    second = new_plugin_ca("second", clock=setup.clock)
    broken = PluginCa(second.root, second.root_key, second.intermediate, setup.first.intermediate_key)
    write_plugin_ca(setup.state, broken)


def _foreign_chain(setup: Setup) -> None:
    second, third = new_plugin_ca("second", clock=setup.clock), new_plugin_ca("third", clock=setup.clock)
    write_plugin_ca(setup.state, PluginCa(third.root, third.root_key, second.intermediate, second.intermediate_key))


def _other_trust_domain(setup: Setup) -> None:
    write_plugin_ca(setup.state, new_plugin_ca("elsewhere", trust_domain="other.example", clock=setup.clock))


def _public_key_file(setup: Setup) -> None:
    write_plugin_ca(setup.state, new_plugin_ca("second", clock=setup.clock))
    (setup.state / KEY_FILE).chmod(0o644)


def _garbage(setup: Setup) -> None:
    (setup.state / CERT_FILE).write_bytes(b"not a certificate")


@pytest.mark.parametrize("breaks", [_mismatched, _foreign_chain, _other_trust_domain, _public_key_file, _garbage])
def test_invalid_files_keep_the_current_ca_and_are_counted_once(setup: Setup, breaks: object) -> None:
    before = setup.current.ca
    breaks(setup)  # type: ignore[operator]
    assert setup.reloader.reload() is False
    assert setup.current.ca is before and not setup.current.changed.is_set()
    assert setup.count("invalid") == 1
    assert setup.reloader.poll() is False and setup.reloader.poll() is False
    assert setup.count("invalid") == 1  # the same broken content is not retried
    leaf, _ = setup.issue()
    assert _issuer(leaf) == setup.first.intermediate.subject  # still signing with the old CA


def test_a_fixed_set_after_a_broken_one_applies(setup: Setup) -> None:
    _mismatched(setup)
    assert setup.reloader.reload() is False
    second = new_plugin_ca("second", clock=setup.clock)
    write_plugin_ca(setup.state, second)
    assert setup.reloader.reload() is True
    assert setup.current.ca.root_cert == second.intermediate


async def test_old_root_trusted_alongside_until_retired(setup: Setup) -> None:
    old_leaf, old_key = setup.issue()
    old_token = create_token(setup.current.ca, "shop", "web", 7200, setup.clock)
    second = new_plugin_ca("second", clock=setup.clock)
    write_plugin_ca(setup.state, second)
    assert setup.reloader.reload() is True
    ca = setup.current.ca
    assert ca.trust_bundle_pem() == pem(second.root, setup.first.root)
    assert setup.renew(old_leaf, old_key) == WEB  # a certificate of the replaced CA still renews
    assert verify_token(ca, old_token, setup.clock) == ("shop", "web")  # and its tokens still work
    new_leaf, new_key = setup.issue()
    assert _issuer(new_leaf) == second.intermediate.subject

    await setup.clock.advance(RETAIN + 1)
    assert ca.trust_bundle_pem() == pem(second.root)
    with pytest.raises(Unauthenticated, match="not issued by this citadel"):  # still unexpired, but retired
        setup.renew(old_leaf, old_key)
    assert setup.renew(new_leaf, new_key) == WEB


def test_two_replacements_keep_both_predecessors(setup: Setup) -> None:
    second, third = new_plugin_ca("second", clock=setup.clock), new_plugin_ca("third", clock=setup.clock)
    write_plugin_ca(setup.state, second)
    assert setup.reloader.reload() is True
    write_plugin_ca(setup.state, third)
    assert setup.reloader.reload() is True
    assert setup.current.ca.trust_bundle_pem() == pem(third.root, second.root, setup.first.root)


async def test_the_watch_loop_runs_on_the_injected_clock(setup: Setup) -> None:
    watcher = asyncio.create_task(setup.reloader.run())
    try:
        await asyncio.sleep(0)
        write_plugin_ca(setup.state, new_plugin_ca("second", clock=setup.clock))
        await setup.clock.advance(5.0)
        assert setup.count("applied") == 0
        await setup.clock.advance(5.0)
        assert setup.count("applied") == 1
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
