"""Rotated TLS origination files: picked up after the check interval, a broken change keeps the last good ones."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import pytest

from services.proxy.balancer import ClusterRuntime, ClusterRuntimes
from services.proxy.origination import RELOAD_INTERVAL, Origination
from services.proxy.tls import TlsContexts
from services.proxy.upstream import PoolSettings, UpstreamPools
from shared.clock import FakeClock
from shared.model.proxy_config import Cluster, Endpoint
from tests.origination_pki import SERVER_NAME, PkiFiles, write_pki

CLUSTER = "outbound|443||api.example.test"
LOGGER = "services.proxy.origination"


def _cluster(tls: dict[str, Any] | None) -> Cluster:
    return Cluster.model_validate(
        {
            "name": CLUSTER,
            "host": SERVER_NAME,
            "port": 443,
            "endpoints": [{"address": "127.0.0.1", "port": 8443}],
            "trafficPolicy": {"tls": tls} if tls is not None else None,
        }
    )


def _replace(target: Path, source: Path) -> None:
    """Rotate as cert-manager does: write aside, rename over (a new inode, whatever the timestamps' resolution)."""
    aside = target.with_name(target.name + ".new")
    aside.write_bytes(source.read_bytes())
    os.replace(aside, target)


def _origination(runtime: ClusterRuntime) -> Origination:
    assert runtime.pool.origination is not None
    return runtime.pool.origination


@pytest.fixture
def first(tmp_path: Path) -> PkiFiles:
    return write_pki(tmp_path / "first")


@pytest.fixture
def second(tmp_path: Path) -> PkiFiles:
    return write_pki(tmp_path / "second")


def _live_ca(tmp_path: Path, source: PkiFiles) -> Path:
    live = tmp_path / "live" / "ca.pem"
    live.parent.mkdir(exist_ok=True)
    _replace(live, source.ca)
    return live


async def test_a_rotated_ca_file_is_picked_up_after_the_interval_and_not_before(
    tmp_path: Path, first: PkiFiles, second: PkiFiles
) -> None:
    clock = FakeClock()
    runtimes = ClusterRuntimes(clock, random.Random(1))
    live = _live_ca(tmp_path, first)
    cluster = _cluster({"mode": "SIMPLE", "caCertificates": str(live)})
    runtime = runtimes.get(cluster)
    before = _origination(runtime)
    pool_before = runtime.pool
    _replace(live, second.ca)
    assert _origination(runtimes.get(cluster)) is before
    await clock.advance(RELOAD_INTERVAL - 0.1)
    assert _origination(runtimes.get(cluster)) is before
    await clock.advance(0.1)
    after = _origination(runtimes.get(cluster))
    assert after is not before and after.error is None
    assert runtimes.get(cluster) is runtime  # the same runtime: breaker, ejections and counts stay
    assert runtime.pool != pool_before and runtime.pool.connect_timeout == pool_before.connect_timeout
    assert after.context().get_ca_certs() != before.context().get_ca_certs()
    await clock.advance(RELOAD_INTERVAL)
    assert _origination(runtimes.get(cluster)) is after  # unchanged files: nothing rebuilt


async def test_a_rotated_client_certificate_is_picked_up_once_certificate_and_key_match(
    tmp_path: Path, first: PkiFiles, second: PkiFiles, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    runtimes = ClusterRuntimes(clock, random.Random(1), reload_interval=1.0)
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    _replace(cert, first.client_cert)
    _replace(key, first.client_key)
    cluster = _cluster({"mode": "MUTUAL", "clientCertificate": str(cert), "privateKey": str(key)})
    before = _origination(runtimes.get(cluster))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        _replace(cert, second.client_cert)  # the key follows a moment later
        await clock.advance(1.0)
        assert _origination(runtimes.get(cluster)) is before
        _replace(key, second.client_key)
        await clock.advance(1.0)
        after = _origination(runtimes.get(cluster))
    assert after is not before and after.error is None
    assert len(caplog.records) == 1 and "keeping the last good ones" in caplog.records[0].getMessage()


async def test_a_broken_change_keeps_the_last_good_context_and_logs_once(
    tmp_path: Path, first: PkiFiles, second: PkiFiles, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    runtimes = ClusterRuntimes(clock, random.Random(1))
    live = _live_ca(tmp_path, first)
    cluster = _cluster({"mode": "SIMPLE", "caCertificates": str(live)})
    good = _origination(runtimes.get(cluster))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        live.write_text("not a certificate\n")
        for _ in range(3):
            await clock.advance(RELOAD_INTERVAL)
            for _ in range(5):
                runtime = runtimes.get(cluster)
                assert _origination(runtime) is good and runtime.pool.usable
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"cluster {CLUSTER}: changed TLS origination files do not load, keeping")
    assert f"caCertificates {live}: " in messages[0]
    _replace(live, second.ca)
    await clock.advance(RELOAD_INTERVAL)
    fixed = _origination(runtimes.get(cluster))
    assert fixed is not good and fixed.error is None


async def test_a_file_missing_at_config_time_is_loaded_once_it_appears(
    tmp_path: Path, first: PkiFiles, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    runtimes = ClusterRuntimes(clock, random.Random(1))
    late = tmp_path / "late" / "ca.pem"
    cluster = _cluster({"mode": "SIMPLE", "caCertificates": str(late)})
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        runtime = runtimes.get(cluster)
        assert not runtime.pool.usable
        await clock.advance(RELOAD_INTERVAL)
        assert not runtimes.get(cluster).pool.usable  # still missing: nothing changed, nothing logged again
    assert len(caplog.records) == 1
    late.parent.mkdir()
    _replace(late, first.ca)
    assert not runtimes.get(cluster).pool.usable  # not before the interval
    await clock.advance(RELOAD_INTERVAL)
    recovered = runtimes.get(cluster)
    assert recovered is runtime and recovered.pool.usable and _origination(recovered).error is None


async def test_a_change_that_never_loaded_updates_the_failure(tmp_path: Path) -> None:
    clock = FakeClock()
    runtimes = ClusterRuntimes(clock, random.Random(1))
    late = tmp_path / "ca.pem"
    cluster = _cluster({"mode": "SIMPLE", "caCertificates": str(late)})
    assert "No such file" in (_origination(runtimes.get(cluster)).error or "")
    late.write_text("not a certificate\n")
    await clock.advance(RELOAD_INTERVAL)
    runtime = runtimes.get(cluster)
    assert not runtime.pool.usable and "No such file" not in (_origination(runtime).error or "")


@pytest.mark.parametrize(
    "tls", [None, {"mode": "DISABLE"}, {"mode": "SIMPLE"}, {"mode": "SIMPLE", "insecureSkipVerify": True}]
)
def test_nothing_is_watched_without_origination_files(tls: dict[str, Any] | None) -> None:
    assert ClusterRuntimes(FakeClock(), random.Random(1)).get(_cluster(tls)).origination_watch is None


async def test_a_rebuilt_origination_gets_a_new_lean_pool_and_the_old_one_drains(first: PkiFiles) -> None:
    tls = {"mode": "SIMPLE", "caCertificates": str(first.ca)}
    old, new = Origination.of(_cluster(tls)), Origination.of(_cluster(tls))
    endpoint = Endpoint(address="127.0.0.1", port=8443)
    pools = UpstreamPools(TlsContexts())
    try:
        before = pools.lean_for(endpoint, PoolSettings(CLUSTER, origination=old))
        assert before is not None and pools.lean_for(endpoint, PoolSettings(CLUSTER, origination=old)) is before
        after = pools.lean_for(endpoint, PoolSettings(CLUSTER, origination=new))
        assert after is not None and after is not before
        assert before.closed and not after.closed
    finally:
        await pools.close()
