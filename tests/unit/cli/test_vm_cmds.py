"""`isthmus vm bundle` and `isthmus proxy run --bundle`: the bundle written, read back, flags still win."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import pytest

from services.citadel.ca import CertificateAuthority
from services.cli import vm_cmds
from services.proxy.main import add_arguments, apply_bundle, read_token, settings_from
from shared.vm_bundle import BundleError, format_env, parse_env, read_env


def run_cli(*argv: str) -> int:
    root = argparse.ArgumentParser(prog="isthmus")
    vm_cmds.register(root.add_subparsers())
    args = root.parse_args(argv)
    return int(args.handler(args))


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    CertificateAuthority.load_or_create(tmp_path / "citadel", "mesh.example")
    out = tmp_path / "bundle"
    code = run_cli(
        "vm", "bundle", "--service", "payment", "--namespace", "shop", "--service-account", "pay",
        "--port", "8080", "--version", "v2", "--upstream", "ledger", "--out", str(out),
        "--citadel-state", str(tmp_path / "citadel"), "--nats-url", "nats://10.0.0.2:4222",
        "--citadel-addr", "10.0.0.2:15012", "--locality", "eu-west1/eu-west1-c",
    )  # fmt: skip
    assert code == 0
    return out


def test_bundle_files_and_modes(bundle: Path) -> None:
    assert sorted(p.name for p in bundle.iterdir()) == ["README", "mesh.env", "root-cert.pem", "token"]
    assert stat.S_IMODE((bundle / "token").stat().st_mode) == 0o600
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o700
    assert (bundle / "root-cert.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    env = read_env(bundle)
    assert env == {
        "ISTHMUS_NATS_URL": "nats://10.0.0.2:4222",
        "ISTHMUS_CONSUL_ADDR": "127.0.0.1:8500",
        "ISTHMUS_CITADEL_ADDR": "10.0.0.2:15012",
        "ISTHMUS_TRUST_DOMAIN": "mesh.example",
        "ISTHMUS_SERVICE": "payment",
        "ISTHMUS_NAMESPACE": "shop",
        "ISTHMUS_SERVICE_ACCOUNT": "pay",
        "ISTHMUS_VERSION": "v2",
        "ISTHMUS_APP_PORT": "8080",
        "ISTHMUS_UPSTREAMS": "ledger",
        "ISTHMUS_LOCALITY": "eu-west1/eu-west1-c",
    }


def proxy_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_proxy_run_takes_everything_from_the_bundle(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_NATS_URL", "nats://elsewhere:4222")  # the bundle beats the environment
    args = proxy_args("--bundle", str(bundle))
    apply_bundle(args)
    settings = settings_from(args)
    assert (settings.service, settings.namespace, settings.account, settings.version, settings.app_port) == (
        "payment", "shop", "pay", "v2", 8080,
    )  # fmt: skip
    assert settings.spiffe_id == "spiffe://mesh.example/ns/shop/sa/pay"
    assert settings.upstreams == ("ledger",) and settings.state_dir == bundle / "state"
    assert settings.locality == "eu-west1/eu-west1-c"
    assert (args.nats_url, args.citadel_addr) == ("nats://10.0.0.2:4222", "10.0.0.2:15012")
    assert read_token(args) == (bundle / "token").read_text().strip()
    assert (bundle / "state" / "trust-bundle.pem").read_bytes() == (bundle / "root-cert.pem").read_bytes()


def test_explicit_flags_beat_the_bundle(bundle: Path, tmp_path: Path) -> None:
    args = proxy_args("--bundle", str(bundle), "--version", "v9", "--nats-url", "nats://x:1", "--app-port", "9")
    args.state_dir = tmp_path / "elsewhere"
    apply_bundle(args)
    settings = settings_from(args)
    assert (settings.version, settings.app_port, args.nats_url) == ("v9", 9, "nats://x:1")


def test_without_bundle_service_and_port_are_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--service is required"):
        settings_from(proxy_args("--app-port", "1"))
    with pytest.raises(BundleError, match=r"mesh\.env"):
        apply_bundle(proxy_args("--bundle", str(tmp_path / "missing")))


def test_env_format_round_trips_odd_values() -> None:
    values = {"ISTHMUS_NATS_URL": "nats://a b'c", "ISTHMUS_SERVICE": "x"}
    assert parse_env(format_env(values)) == values
    with pytest.raises(BundleError, match="line 1"):
        parse_env("not a line")


def test_missing_ca_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli("vm", "bundle", "--service", "a", "--namespace", "b", "--service-account", "c", "--port", "1",
                   "--citadel-state", str(tmp_path / "none"), "--out", str(tmp_path / "o"))  # fmt: skip
    assert code == 1 and capsys.readouterr().err.startswith("isthmus vm bundle: ")
    assert not (tmp_path / "o").exists()
