"""`isthmus vm bundle --protocol`: a TCP workload's bundle makes `isthmus proxy run --bundle` a TCP sidecar."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.citadel.ca import CertificateAuthority
from services.proxy.main import apply_bundle, settings_from
from shared.vm_bundle import BundleError, read_env
from tests.unit.cli.test_vm_cmds import proxy_args, run_cli


def make_bundle(tmp_path: Path, *extra: str) -> Path:
    CertificateAuthority.load_or_create(tmp_path / "citadel", "mesh.example")
    out = tmp_path / "bundle"
    code = run_cli(
        "vm", "bundle", "--service", "db", "--namespace", "data", "--service-account", "db", "--port", "5432",
        "--out", str(out), "--citadel-state", str(tmp_path / "citadel"), *extra,
    )  # fmt: skip
    assert code == 0
    return out


def test_a_tcp_bundle_runs_a_tcp_sidecar(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "--protocol", "tcp", "--upstream", "cache:6379:16379")
    env = read_env(bundle)
    assert env["ISTHMUS_PROTOCOL"] == "tcp" and env["ISTHMUS_UPSTREAMS"] == "cache:6379:16379"
    args = proxy_args("--bundle", str(bundle))
    apply_bundle(args)
    settings = settings_from(args)
    assert settings.protocol == "tcp" and type(settings.protocol) is str
    assert settings.upstreams == ("cache:6379:16379",)


def test_http_is_the_default_and_an_explicit_flag_wins(tmp_path: Path) -> None:
    plain = make_bundle(tmp_path / "plain")
    assert "ISTHMUS_PROTOCOL" not in read_env(plain)
    args = proxy_args("--bundle", str(plain))
    apply_bundle(args)
    assert settings_from(args).protocol == "http"

    tcp = make_bundle(tmp_path / "tcp", "--protocol", "tcp")
    args = proxy_args("--bundle", str(tcp), "--protocol", "http")
    apply_bundle(args)
    assert settings_from(args).protocol == "http"


def test_a_bundle_with_an_unknown_protocol_is_refused(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    with (bundle / "mesh.env").open("a") as env:
        env.write("ISTHMUS_PROTOCOL=udp\n")
    with pytest.raises(BundleError, match="ISTHMUS_PROTOCOL"):
        apply_bundle(proxy_args("--bundle", str(bundle)))


def test_vm_bundle_rejects_an_unknown_protocol(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        make_bundle(tmp_path, "--protocol", "udp")
