"""Declared upstreams in Consul Meta: names for scoping, `name:port[:localport]` for TCP listeners, protocol."""

from __future__ import annotations

import pytest

from shared.consul import (
    META_PROTOCOL,
    TcpUpstream,
    labels_from_meta,
    parse_tcp_upstreams,
    parse_upstreams,
    protocol_of,
    upstream_specs,
)


def test_names_ignore_ports_and_tcp_entries_keep_them() -> None:
    meta = "Reviews, db:5432, db:5433:0 ,cache:6379:16379,db:5432"
    assert parse_upstreams(meta) == ("cache", "db", "reviews")
    assert parse_tcp_upstreams(meta) == (
        TcpUpstream("cache", 6379, 16379),
        TcpUpstream("db", 5432, 5432),
        TcpUpstream("db", 5433, 0),
    )
    assert upstream_specs(meta) == ("cache:6379:16379", "db:5432", "db:5433:0", "reviews")


def test_meta_is_read_leniently_and_flags_strictly() -> None:
    assert parse_upstreams("db:x,web") == ("web",)
    assert parse_tcp_upstreams("db:0,db:70000,db:1:2:3") == ()
    with pytest.raises(ValueError, match="'db:x': the service port"):
        upstream_specs("db:x")
    with pytest.raises(ValueError, match="NAME:PORT:LOCALPORT"):
        upstream_specs("db:1:2:3")


def test_protocol_defaults_to_http_and_is_no_label() -> None:
    assert protocol_of({}) == "http"
    assert protocol_of({META_PROTOCOL: "TCP"}) == "tcp"
    assert protocol_of({META_PROTOCOL: "GRPC"}) == "grpc"
    assert protocol_of({META_PROTOCOL: "http2"}) == "http2"
    assert protocol_of({META_PROTOCOL: "mongo"}) == "http"
    assert labels_from_meta({META_PROTOCOL: "tcp", "version": "v1"}) == {"version": "v1"}
