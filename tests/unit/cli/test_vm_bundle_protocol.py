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


def test_extra_ports_travel_in_the_bundle(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "--extra-port", "9080", "--extra-port", "6432:tcp:15008")
    assert read_env(bundle)["ISTHMUS_EXTRA_PORTS"] == "9080:http:0,6432:tcp:15008"
    args = proxy_args("--bundle", str(bundle))
    apply_bundle(args)
    assert [port.spec for port in settings_from(args).extra_ports] == ["http:9080:0", "tcp:6432:15008"]
    assert "ISTHMUS_EXTRA_PORTS" not in read_env(make_bundle(tmp_path / "plain"))


def test_the_bundle_refuses_an_extra_port_the_app_port_already_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    CertificateAuthority.load_or_create(tmp_path / "citadel", "mesh.example")
    code = run_cli(
        "vm", "bundle", "--service", "db", "--namespace", "data", "--service-account", "db", "--port", "5432",
        "--extra-port", "5432:tcp", "--out", str(tmp_path / "bundle"), "--citadel-state", str(tmp_path / "citadel"),
    )  # fmt: skip
    assert code == 1
    assert "--extra-port: app port 5432 is fronted twice" in capsys.readouterr().err


def test_a_bundle_with_a_malformed_extra_port_is_refused(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    env = bundle / "mesh.env"
    env.write_text(env.read_text() + "ISTHMUS_EXTRA_PORTS=5432:udp\n")
    expected = "ISTHMUS_EXTRA_PORTS: '5432:udp': the protocol must be one of http, http2, grpc, tcp, not 'udp'"
    with pytest.raises(BundleError, match=expected):
        apply_bundle(proxy_args("--bundle", str(bundle)))


def test_the_weight_travels_in_the_bundle_and_an_explicit_flag_wins(tmp_path: Path) -> None:
    assert "ISTHMUS_WEIGHT" not in read_env(make_bundle(tmp_path / "plain"))
    heavy = make_bundle(tmp_path / "heavy", "--weight", "3")
    assert read_env(heavy)["ISTHMUS_WEIGHT"] == "3"
    args = proxy_args("--bundle", str(heavy))
    apply_bundle(args)
    assert settings_from(args).weight == 3
    args = proxy_args("--bundle", str(heavy), "--weight", "1")
    apply_bundle(args)
    assert settings_from(args).weight == 1


def test_a_bundle_with_a_malformed_weight_is_refused(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    env = bundle / "mesh.env"
    env.write_text(env.read_text() + "ISTHMUS_WEIGHT=heavy\n")
    with pytest.raises(BundleError, match="ISTHMUS_WEIGHT"):
        apply_bundle(proxy_args("--bundle", str(bundle)))
