"""Further app ports of one sidecar: the `--extra-port` flag form, strict, and the Consul Meta form, lenient."""

from __future__ import annotations

import pytest

from shared.consul import (
    META_EXTRA_PORTS,
    WorkloadPort,
    extra_port,
    extra_ports_meta,
    labels_from_meta,
    parse_extra_ports,
)


def test_flag_form_defaults_to_http_on_any_free_inbound_port() -> None:
    assert extra_port("9090") == WorkloadPort("http", 9090, 0)
    assert extra_port("5432:TCP") == WorkloadPort("tcp", 5432, 0)
    assert extra_port(" 5432:tcp:15008 ") == WorkloadPort("tcp", 5432, 15008)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "the app port must be a number from 1 to 65535"),
        ("0", "the app port must be a number from 1 to 65535"),
        ("70000:tcp", "the app port must be a number from 1 to 65535"),
        ("db:tcp", "the app port must be a number"),
        ("5432:udp", "the protocol must be one of http, http2, grpc, tcp, not 'udp'"),
        ("5432:tcp:x", "the inbound port must be a number from 0 to 65535"),
        ("5432:tcp:1:2", "write APP_PORT, APP_PORT:PROTOCOL or APP_PORT:PROTOCOL:INBOUND_PORT"),
    ],
)
def test_flag_form_names_the_value_and_the_problem(value: str, problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        extra_port(value)
    assert str(raised.value).startswith(f"{value!r}: ")
    assert problem in str(raised.value)


def test_meta_round_trips_and_skips_what_it_cannot_read() -> None:
    ports = (WorkloadPort("tcp", 5432, 15008), WorkloadPort("http", 9090, 40001))
    assert extra_ports_meta(ports) == "tcp:5432:15008,http:9090:40001"
    assert parse_extra_ports(extra_ports_meta(ports)) == ports
    written = "tcp:5432:15008, udp:1:2, tcp:6379, http:9090:0, tcp:5432:15009, HTTP:8080:15010"
    assert parse_extra_ports(written) == (WorkloadPort("tcp", 5432, 15008), WorkloadPort("http", 8080, 15010))
    assert parse_extra_ports(None) == ()


def test_the_meta_key_is_no_label() -> None:
    assert labels_from_meta({META_EXTRA_PORTS: "tcp:5432:15008", "app": "db"}) == {"app": "db"}
