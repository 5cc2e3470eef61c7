"""`isthmus token create` prints a token the CA in the state directory accepts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from services.citadel.ca import CertificateAuthority
from services.citadel.tokens import verify_token
from services.cli import token_cmds
from shared.clock import SYSTEM_CLOCK


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="isthmus")
    token_cmds.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_token_create_prints_a_valid_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path, "cluster.local")
    args = parse(["token", "create", "--state-dir", str(tmp_path), "--namespace", "shop", "--service-account", "web"])
    assert args.handler(args) == 0
    token = capsys.readouterr().out.strip()
    assert verify_token(ca, token, SYSTEM_CLOCK) == ("shop", "web")


def test_token_create_without_a_ca_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["token", "create", "--state-dir", str(tmp_path / "none"), "--namespace", "a", "--service-account", "b"]
    args = parse(argv)
    assert args.handler(args) == 1
    assert "no CA in" in capsys.readouterr().err


def test_token_ttl_must_be_a_duration(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["token", "create", "--namespace", "a", "--service-account", "b", "--ttl", "forever"])
    assert "not a duration" in capsys.readouterr().err
