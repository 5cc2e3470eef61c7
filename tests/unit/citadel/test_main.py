"""Citadel's flags: Istio duration text, defaults from shared/ports, extra SANs sorted into DNS names and IPs."""

from __future__ import annotations

import argparse

import pytest

from services.citadel.main import add_arguments
from services.citadel.server import split_sans
from shared.ports import DEFAULT_CITADEL_ADDR, NATS_URL_ENV


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NATS_URL_ENV, "nats://10.0.0.5:4222")
    args = parse([])
    assert args.listen == DEFAULT_CITADEL_ADDR
    assert args.nats_url == "nats://10.0.0.5:4222"
    assert args.trust_domain == "cluster.local"
    assert (args.default_ttl, args.max_ttl) == (24 * 3600, 720 * 3600)
    assert args.san == []


def test_durations_and_repeated_sans() -> None:
    args = parse(["--default-ttl", "90s", "--max-ttl", "2h", "--san", "citadel.mesh", "--san", "10.1.2.3"])
    assert (args.default_ttl, args.max_ttl) == (90, 7200)
    assert args.san == ["citadel.mesh", "10.1.2.3"]


@pytest.mark.parametrize("bad", ["24", "soon", "0.5s"])
def test_bad_durations_exit_with_a_message(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--default-ttl", bad])
    assert "--default-ttl" in capsys.readouterr().err


def test_sans_split_into_dns_and_ip_without_duplicates() -> None:
    dns, ips = split_sans(["localhost", "citadel", "127.0.0.1", "citadel", "::1", "127.0.0.1"])
    assert dns == ["localhost", "citadel"]
    assert ips == ["127.0.0.1", "::1"]
