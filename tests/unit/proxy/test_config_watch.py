"""Applying configs without the bus: ACK/NACK content, atomic swap, last-known-good on disk."""

from __future__ import annotations

import json
import random
import stat
from pathlib import Path

from services.proxy.config_watch import LAST_CONFIG_FILE, ConfigWatcher
from services.proxy.snapshot import ProxyState
from shared.clock import FakeClock
from shared.model.proxy_config import ProxyConfig

PROXY_ID = "productpage-default-node-15006"


def _config(cluster: str = "outbound|80||a", route_to: str | None = None) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "proxyId": PROXY_ID,
            "service": "productpage",
            "namespace": "default",
            "virtualHosts": [
                {"name": "a", "domains": ["a"], "routes": [{"route": [{"cluster": route_to or cluster}]}]}
            ],
            "clusters": [{"name": cluster, "host": "a", "port": 80}],
        }
    ).versioned()


def _watcher(tmp_path: Path, state: ProxyState) -> ConfigWatcher:
    return ConfigWatcher(PROXY_ID, state, tmp_path, FakeClock(), random.Random(1))


def test_accepted_config_is_swapped_acked_and_persisted(tmp_path: Path) -> None:
    state = ProxyState()
    config = _config()
    ack = _watcher(tmp_path, state).apply(config.to_json())
    assert ack.accepted and ack.version == config.version and ack.applied_version == config.version
    assert state.snapshot is not None and state.snapshot.config == config
    path = tmp_path / LAST_CONFIG_FILE
    assert ProxyConfig.from_json(path.read_bytes()) == config
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rejected_config_keeps_previous_snapshot(tmp_path: Path) -> None:
    state = ProxyState()
    watcher = _watcher(tmp_path, state)
    good = _config()
    watcher.apply(good.to_json())
    before = state.snapshot
    bad = json.loads(_config(route_to="outbound|80||missing").to_json())
    bad["version"] = "v-bad"
    ack = watcher.apply(json.dumps(bad).encode())
    assert not ack.accepted
    assert ack.version == "v-bad" and ack.applied_version == good.version
    assert "missing" in (ack.error or "")
    assert state.snapshot is before
    assert ProxyConfig.from_json((tmp_path / LAST_CONFIG_FILE).read_bytes()) == good


def test_unparsable_and_foreign_configs_are_nacked(tmp_path: Path) -> None:
    watcher = _watcher(tmp_path, ProxyState())
    assert not watcher.apply(b"{not json").accepted
    foreign = _config().model_copy(update={"proxy_id": "someone-else"})
    ack = watcher.apply(foreign.to_json())
    assert not ack.accepted and "someone-else" in (ack.error or "")


def test_last_known_good_is_loaded_at_start(tmp_path: Path) -> None:
    config = _config()
    (tmp_path / LAST_CONFIG_FILE).write_bytes(config.to_json())
    state = ProxyState()
    assert _watcher(tmp_path, state).load_last_known_good()
    assert state.snapshot is not None and state.snapshot.version == config.version


def test_broken_last_known_good_is_ignored(tmp_path: Path) -> None:
    (tmp_path / LAST_CONFIG_FILE).write_bytes(b"garbage")
    state = ProxyState()
    assert not _watcher(tmp_path, state).load_last_known_good()
    assert state.snapshot is None
