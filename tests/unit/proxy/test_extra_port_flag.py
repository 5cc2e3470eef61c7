"""`isthmus proxy run --extra-port`: argparse errors name the flag and the problem, ports are fronted and bound
once, and the ports reach the Consul registration (nothing changes for a sidecar without them)."""

from __future__ import annotations

import argparse

import pytest

from services.proxy.main import add_arguments, settings_from
from services.proxy.registration import Registration
from shared.consul import META_EXTRA_PORTS, WorkloadPort

BASE = ("--service", "db", "--app-port", "9080")


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="isthmus proxy run")
    add_arguments(parser)
    return parser.parse_args([*BASE, *argv])


def test_repeatable_with_protocol_and_inbound_port() -> None:
    settings = settings_from(_parse("--extra-port", "5432:tcp", "--extra-port", "9090:http:15008"))
    assert settings.extra_ports == (WorkloadPort("tcp", 5432, 0), WorkloadPort("http", 9090, 15008))
    assert settings_from(_parse()).extra_ports == ()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("5432:udp", "'5432:udp': the protocol must be one of http, http2, grpc, tcp, not 'udp'"),
        ("x", "'x': the app port must be a number from 1 to 65535"),
        ("5432:tcp:99999", "'5432:tcp:99999': the inbound port must be a number from 0 to 65535"),
    ],
)
def test_a_bad_value_is_an_argparse_error_naming_the_flag(
    value: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _parse("--extra-port", value)
    assert exited.value.code == 2
    assert f"argument --extra-port: {problem}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (("--extra-port", "9080:tcp"), "--extra-port 9080:tcp: app port 9080 is already fronted (--app-port)"),
        (
            ("--extra-port", "5432:tcp", "--extra-port", "5432:http"),
            "--extra-port 5432:http: app port 5432 is already fronted (--extra-port)",
        ),
        (
            ("--extra-port", "5432:tcp:15006"),
            "--extra-port 5432:tcp:15006: inbound port 15006 is already taken (--inbound-port)",
        ),
        (
            ("--extra-port", "5432:tcp:15008", "--extra-port", "6379:tcp:15008"),
            "--extra-port 6379:tcp:15008: inbound port 15008 is already taken (--extra-port)",
        ),
    ],
)
def test_duplicate_ports_are_refused(argv: tuple[str, ...], problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        settings_from(_parse(*argv))
    assert str(raised.value) == problem


def test_any_free_inbound_port_may_be_asked_for_twice() -> None:
    settings = settings_from(_parse("--extra-port", "5432:tcp", "--extra-port", "6379:tcp"))
    assert [port.inbound_port for port in settings.extra_ports] == [0, 0]


def test_registration_announces_the_bound_ports_with_one_app_check_each() -> None:
    single = Registration("db-1", "db", "data", "db", "v1", "127.0.0.1", 15006, 15021, 9080)
    assert META_EXTRA_PORTS not in single.definition()["Meta"]
    assert [check["HTTP"] for check in single.definition()["Checks"] if "app-health" in check["HTTP"]] == [
        "http://127.0.0.1:15021/app-health/9080"
    ]

    ports = (WorkloadPort("tcp", 5432, 41000), WorkloadPort("http", 9090, 41001))
    multi = Registration("db-1", "db", "data", "db", "v1", "127.0.0.1", 15006, 15021, 9080, extra_ports=ports)
    definition = multi.definition()
    assert definition["Meta"][META_EXTRA_PORTS] == "tcp:5432:41000,http:9090:41001"
    assert [(check["Name"], check["HTTP"]) for check in definition["Checks"] if check["Name"] != "sidecar ready"] == [
        ("app port", "http://127.0.0.1:15021/app-health/9080"),
        ("app port 5432", "http://127.0.0.1:15021/app-health/5432"),
        ("app port 9090", "http://127.0.0.1:15021/app-health/9090"),
    ]
