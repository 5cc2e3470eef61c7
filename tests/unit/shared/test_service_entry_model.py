"""ServiceEntry model: Istio's shape parses, and what Isthmus cannot honour is refused with the field's path."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from shared.model import ServiceEntry, WorkloadEntry, dump_resource, parse_resource
from shared.model.service_entry import Location, PortProtocol, Resolution

BASE: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "ServiceEntry",
    "metadata": {"name": "payments", "namespace": "shop"},
    "spec": {
        "hosts": ["API.payments.example"],
        "ports": [
            {"number": 80, "name": "http", "protocol": "http", "targetPort": 8080},
            {"number": 5432, "name": "db", "protocol": "Tcp"},
        ],
        "resolution": "STATIC",
        "endpoints": [
            {"address": "192.0.2.10", "labels": {"version": "v1"}, "locality": "eu/west-1"},
            {"address": "2001:db8::1", "ports": {"http": 8443}, "serviceAccount": "payments"},
        ],
    },
}


TCP_A = {"number": 80, "name": "a", "protocol": "TCP"}


def entry(**spec: Any) -> ServiceEntry:
    doc = copy.deepcopy(BASE)
    doc["spec"].update(spec)
    for key in [key for key, value in spec.items() if value is None]:
        del doc["spec"][key]
    resource = parse_resource(doc)
    assert isinstance(resource, ServiceEntry)
    return resource


def errors(**spec: Any) -> dict[str, str]:
    """Field path (dotted) -> message, for each error."""
    with pytest.raises(ValidationError) as info:
        entry(**spec)
    return {".".join(str(part) for part in error["loc"]): error["msg"] for error in info.value.errors()}


def test_istio_shape_parses_with_defaults_and_case_insensitive_protocols() -> None:
    resource = entry()
    spec = resource.spec
    assert spec.hosts == ["api.payments.example"]
    assert [p.protocol for p in spec.ports] == [PortProtocol.HTTP, PortProtocol.TCP]
    assert spec.location == Location.MESH_EXTERNAL
    assert spec.resolution == Resolution.STATIC
    assert [p.number for p in spec.http_ports] == [80]
    assert spec.port(5432) is not None and spec.port(81) is None
    assert parse_resource(dump_resource(resource)) == resource
    assert entry(location="MESH_INTERNAL").spec.location == Location.MESH_INTERNAL
    assert entry(exportTo=["*"]).spec.export_to == ["*"]


def test_dns_takes_host_names_and_no_endpoints() -> None:
    assert entry(resolution="DNS", endpoints=[]).spec.endpoints == []
    named = entry(resolution="DNS", endpoints=[{"address": "db-1.example.net"}, {"address": "192.0.2.1"}])
    assert [e.address for e in named.spec.endpoints] == ["db-1.example.net", "192.0.2.1"]
    assert entry(resolution="DNS_ROUND_ROBIN", endpoints=[{"address": "lb.example.net"}]).spec.endpoints


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"hosts": []}, "spec.hosts", "at least 1 item"),
        ({"hosts": ["*.example.com"]}, "spec.hosts.0", "wildcard hosts need resolution NONE"),
        ({"hosts": ["payments"]}, "spec.hosts.0", "fully qualified DNS name with a dot"),
        ({"hosts": ["a.example", "A.example"]}, "spec.hosts", "listed twice (hosts[0] and hosts[1])"),
        ({"addresses": ["10.0.0.1/32"]}, "spec.addresses", "addresses need transparent traffic capture"),
        ({"ports": []}, "spec.ports", "at least 1 item"),
        ({"ports": [{"number": 0, "name": "x", "protocol": "HTTP"}]}, "spec.ports.0.number", "greater than or equal"),
        ({"ports": [{"number": 80, "protocol": "HTTP"}]}, "spec.ports.0.name", "Field required"),
        ({"ports": [{"number": 53, "name": "dns", "protocol": "udp"}]}, "spec.ports.0.protocol", "UDP is not"),
        ({"ports": [{"number": 1, "name": "x", "protocol": "QUIC"}]}, "spec.ports.0.protocol", "is not one of"),
        ({"ports": [TCP_A, {**TCP_A, "number": 81}]}, "spec.ports", "name 'a' is used twice (ports[0] and ports[1])"),
        ({"ports": [TCP_A, {**TCP_A, "name": "b"}]}, "spec.ports", "port number 80 is declared twice"),
        ({"resolution": None}, "spec.resolution", "Istio's default NONE is not supported: set STATIC"),
        ({"resolution": "NONE"}, "spec.resolution", "NONE (forwarding to whatever address the app dialed)"),
        ({"location": "MESH_SOMEWHERE"}, "spec.location", "MESH_EXTERNAL"),
        ({"endpoints": []}, "spec", "resolution STATIC needs at least one endpoint"),
        ({"endpoints": [{"address": "db.example.net"}]}, "spec", "endpoints[0].address: 'db.example.net' is not an IP"),
        ({"endpoints": [{"address": "unix:///var/run/db.sock"}]}, "spec.endpoints.0.address", "unix domain socket"),
        ({"endpoints": [{"address": "not a host"}]}, "spec.endpoints.0.address", "neither an IP address nor"),
        ({"endpoints": [{"address": "192.0.2.1", "ports": {"grpc": 9}}]}, "spec", "endpoints[0].ports: 'grpc'"),
        ({"endpoints": [{"address": "192.0.2.1", "weight": 0}]}, "spec.endpoints.0.weight", "greater than or equal"),
        ({"endpoints": [{"address": "192.0.2.1", "network": "n2"}]}, "spec.endpoints.0.network", "one network"),
        ({"endpoints": [{"address": "192.0.2.1", "locality": "a//b"}]}, "spec.endpoints.0.locality", "not a locality"),
        ({"endpoints": [{"address": "192.0.2.1", "serviceAccount": "A B"}]}, "spec.endpoints.0.serviceAccount", "DNS"),
        ({"exportTo": ["*", "."]}, "spec.exportTo", "cannot be combined with other entries"),
        ({"subjectAltNames": ["spiffe://x/ns/a/sa/b"]}, "spec.subjectAltNames", "subjectAltNames is not supported"),
        ({"workloadSelector": {"labels": {"app": "db"}}}, "spec", "endpoints and workloadSelector are mutually"),
        ({"workloadSelector": {"labels": {}}, "endpoints": None}, "spec.workloadSelector.labels", "at least one label"),
        ({"hots": ["a.example"]}, "spec.hots", "Extra inputs"),
    ],
)
def test_refusals_name_the_field(spec: dict[str, Any], path: str, message: str) -> None:
    found = errors(**spec)
    assert path in found, found
    assert message in found[path]


def test_dns_round_robin_takes_at_most_one_endpoint() -> None:
    found = errors(resolution="DNS_ROUND_ROBIN", endpoints=[{"address": "a.example"}, {"address": "b.example"}])
    assert "DNS_ROUND_ROBIN takes at most one endpoint" in found["spec"]


def test_a_workload_selector_takes_the_place_of_endpoints() -> None:
    parsed = entry(endpoints=None, location="MESH_INTERNAL", workloadSelector={"labels": {"app": "payments"}})
    assert parsed.spec.workload_selector is not None
    assert parsed.spec.workload_selector.labels == {"app": "payments"}
    assert parsed.spec.endpoints == []
    assert dump_resource(parsed)["spec"]["workloadSelector"] == {"labels": {"app": "payments"}}


WORKLOAD: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "WorkloadEntry",
    "metadata": {"name": "vm-1", "namespace": "shop"},
    "spec": {"address": "192.0.2.30", "labels": {"app": "payments"}, "ports": {"http": 8080}},
}


def test_a_workload_entry_resource_parses_and_refuses_what_inline_endpoints_refuse() -> None:
    parsed = parse_resource(WORKLOAD)
    assert isinstance(parsed, WorkloadEntry)
    assert parsed.spec.address == "192.0.2.30" and parsed.spec.ports == {"http": 8080}
    assert dump_resource(parsed)["spec"] == WORKLOAD["spec"]
    for spec, path, message in (
        ({"address": "192.0.2.30", "weight": -1}, "spec.weight", "greater than or equal to 1"),
        ({"address": "192.0.2.30", "network": "n2"}, "spec.network", "one network"),
        ({"address": "not a host"}, "spec.address", "neither an IP address nor"),
        ({"labels": {"app": "x"}}, "spec.address", "Field required"),
    ):
        with pytest.raises(ValidationError) as caught:
            parse_resource({**WORKLOAD, "spec": spec})
        found = {".".join(str(part) for part in error["loc"]): error["msg"] for error in caught.value.errors()}
        assert path in found, found
        assert message in found[path]
