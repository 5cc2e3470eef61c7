"""Peer workloads in access-log records: JSON carries them as Istio's peer objects, text stays Istio's default."""

from __future__ import annotations

import io
import json
from dataclasses import replace

from services.proxy.snapshot import ProxyState
from services.proxy.telemetry.access_log import AccessLog, format_json, format_text
from services.proxy.telemetry.labels import UNKNOWN, UNKNOWN_WORKLOAD, Workload
from services.proxy.telemetry.observe import Telemetry
from services.proxy.telemetry.tcp import TcpMeter, destination_labels, source_labels
from services.proxy.telemetry.tracing import DOWNSTREAM, peer_attributes
from shared.clock import FakeClock
from shared.model.proxy_config import Cluster, Endpoint
from tests.unit.telemetry.test_access_log import RECORD

CALLER = ("order-v1", "shop", "spiffe://cluster.local/ns/shop/sa/order", "order", "v1")
CALLER_OBJECT = {
    "workload": "order-v1",
    "namespace": "shop",
    "identity": "spiffe://cluster.local/ns/shop/sa/order",
    "app": "order",
    "version": "v1",
}


def test_json_names_the_downstream_peer_and_leaves_unknown_ones_null() -> None:
    partly = (UNKNOWN, "shop", "spiffe://cluster.local/ns/shop/sa/order", UNKNOWN, UNKNOWN)
    body = json.loads(format_json(replace(RECORD, downstream_peer=CALLER, upstream_peer=UNKNOWN_WORKLOAD)))
    assert body["downstream_peer"] == CALLER_OBJECT
    assert body["upstream_peer"] is None
    assert json.loads(format_json(replace(RECORD, upstream_peer=partly)))["upstream_peer"] == {
        "workload": None,
        "namespace": "shop",
        "identity": "spiffe://cluster.local/ns/shop/sa/order",
        "app": None,
        "version": None,
    }
    assert json.loads(format_json(RECORD))["downstream_peer"] is None


def test_text_format_is_unchanged_by_peers() -> None:
    assert format_text(replace(RECORD, downstream_peer=CALLER, upstream_peer=CALLER)) == format_text(RECORD)


def test_span_attributes_leave_unknown_fields_out() -> None:
    partly = (UNKNOWN, "shop", "spiffe://cluster.local/ns/shop/sa/order", UNKNOWN, UNKNOWN)
    assert peer_attributes(DOWNSTREAM, partly) == {
        "istio.downstream.namespace": "shop",
        "istio.downstream.identity": "spiffe://cluster.local/ns/shop/sa/order",
    }
    assert peer_attributes(DOWNSTREAM, None) == {}


def _telemetry(stream: io.StringIO) -> Telemetry:
    workload = Workload("db", "shop", "v1", "spiffe://cluster.local/ns/shop/sa/db")
    return Telemetry(workload, ProxyState(), "db~1", access_log=AccessLog(stream, json_format=True))


def test_tcp_lines_name_the_peer_of_each_side() -> None:
    stream = io.StringIO()
    telemetry = _telemetry(stream)
    inbound = TcpMeter(telemetry, FakeClock(), "127.0.0.1:1", "127.0.0.1:2")
    inbound.opened(destination_labels(telemetry, "spiffe://cluster.local/ns/shop/sa/order", True, "-"))
    inbound.closed("127.0.0.1:5432", "inbound|15006||")
    endpoint = Endpoint(address="10.0.0.9", port=15006, labels={"app": "pg", "version": "v2", "namespace": "data"})
    cluster = Cluster(name="outbound|5432||pg", host="pg", port=5432, endpoints=[endpoint])
    outbound = TcpMeter(telemetry, FakeClock(), "127.0.0.1:3", "127.0.0.1:5432")
    outbound.opened(source_labels(telemetry, cluster, endpoint, "-"))
    outbound.closed("10.0.0.9:15006", cluster.name)
    assert telemetry.access_log is not None
    telemetry.access_log.close()

    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["downstream_peer"]["identity"] == "spiffe://cluster.local/ns/shop/sa/order"
    assert first["downstream_peer"]["namespace"] == "shop" and first["upstream_peer"] is None
    assert second["upstream_peer"] == {
        "workload": "pg-v2",
        "namespace": "data",
        "identity": None,
        "app": "pg",
        "version": "v2",
    }
    assert second["downstream_peer"] is None


def test_errors_only_keeps_tcp_connections_the_proxy_ended() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, errors_only=True)
    tcp = replace(RECORD, method="-", path="-", protocol="-", response_code=0)
    for flags in ("-", "UF", "UO", "NR", "RBAC", "-"):
        log.log(replace(tcp, response_flags=flags))
    log.close()
    assert [line.split('" 0 ')[1].split()[0] for line in stream.getvalue().splitlines()] == ["UF", "UO", "NR", "RBAC"]
