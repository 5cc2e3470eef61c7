"""Sidecar model: the egress subset parses, Istio's host format holds and what Isthmus cannot honour is refused."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from pydantic import ValidationError

from services.galley.sources import Document
from services.galley.validate import validate_document
from shared.model import Sidecar, dump_resource, parse_resource
from shared.model.sidecar import app_address, unix_socket_of

BASE: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Sidecar",
    "metadata": {"name": "default", "namespace": "shop"},
    "spec": {"egress": [{"hosts": ["./*", "isthmus-system/*", "*/API.example.com", "~/*", "*/*.example.com"]}]},
}


def doc(**spec: Any) -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    document["spec"].update(spec)
    for key in [key for key, value in spec.items() if value is None]:
        del document["spec"][key]
    return document


def sidecar(**spec: Any) -> Sidecar:
    resource = parse_resource(doc(**spec))
    assert isinstance(resource, Sidecar)
    return resource


def errors(**spec: Any) -> str:
    resource, found = validate_document(Document("sidecar.yaml", 1, doc(**spec)))
    assert resource is None
    return "\n".join(found)


def test_istio_shape_parses_and_round_trips() -> None:
    parsed = sidecar(workloadSelector={"labels": {"app": "order"}}, outboundTrafficPolicy={"mode": "REGISTRY_ONLY"})
    assert parsed.spec.egress_hosts == ("./*", "isthmus-system/*", "*/api.example.com", "~/*", "*/*.example.com")
    assert parsed.spec.workload_selector is not None and parsed.spec.workload_selector.labels == {"app": "order"}
    dumped = dump_resource(parsed)
    assert dumped["spec"]["workloadSelector"] == {"labels": {"app": "order"}}
    assert parse_resource(dumped) == parsed


def test_outbound_traffic_policy_alone_is_a_sidecar_without_egress_limit() -> None:
    assert sidecar(egress=None, outboundTrafficPolicy={"mode": "REGISTRY_ONLY"}).spec.egress_hosts is None


def test_empty_configuration_is_refused() -> None:
    with pytest.raises(ValidationError, match="empty configuration"):
        sidecar(egress=None)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("reviews.shop", "namespace/dnsName"),
        ("/reviews.shop", "cannot be empty"),
        ("shop/", "cannot be empty"),
        ("Shop/reviews.shop", "invalid namespace 'Shop'"),
        ("shop/reviews", "short names"),
        ("shop/*reviews.shop", "leading '\\*.'"),
        ("shop/reviews.*.shop", "leading '\\*.'"),
        ("shop/re_views.shop", "not a DNS name"),
    ],
)
def test_egress_host_format_follows_istio(host: str, message: str) -> None:
    found = errors(egress=[{"hosts": ["./*", host]}])
    assert "spec.egress[0].hosts[1]" in found
    assert re.search(message, found), found


def test_egress_listener_needs_hosts() -> None:
    assert "spec.egress[0].hosts" in errors(egress=[{"hosts": []}])
    assert "spec.egress[0].hosts" in errors(egress=[{}])


@pytest.mark.parametrize(
    ("listener", "field", "message"),
    [
        ({"port": {"number": 9080, "protocol": "HTTP", "name": "http"}}, "port", "per-port"),
        ({"bind": "127.0.0.1"}, "bind", "bind is not supported"),
        ({"captureMode": "NONE"}, "captureMode", "does not capture traffic"),
    ],
)
def test_listener_fields_are_refused(listener: dict[str, Any], field: str, message: str) -> None:
    found = errors(egress=[{"hosts": ["./*"], **listener}])
    assert f"spec.egress[0].{field}" in found and message in found, found


def test_more_than_one_egress_listener_is_refused() -> None:
    found = errors(egress=[{"hosts": ["./*"]}, {"hosts": ["*/*"]}])
    assert "spec.egress" in found and "2 egress listeners" in found and "one listener" in found


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (
            {"ingress": [{"port": {"number": 80}, "defaultEndpoint": "unix://run/app.sock"}]},
            "spec.ingress[0].defaultEndpoint",
            "an absolute path",
        ),
        (
            {"ingress": [{"port": {"number": 80}, "defaultEndpoint": "unix://@abstract"}]},
            "spec.ingress[0].defaultEndpoint",
            "abstract sockets are not supported",
        ),
        (
            {"ingress": [{"port": {"number": 80}, "defaultEndpoint": "10.0.0.7:8080"}]},
            "spec.ingress[0].defaultEndpoint",
            "arbitrary IPs are not supported",
        ),
        (
            {"ingress": [{"port": {"number": 80}, "defaultEndpoint": "127.0.0.1:http"}]},
            "spec.ingress[0].defaultEndpoint",
            "from 1 to 65535",
        ),
        (
            {"ingress": [{"port": {"number": 80}, "tls": {"mode": "SIMPLE"}}]},
            "spec.ingress[0].tls",
            "PeerAuthentication",
        ),
        ({"ingress": [{"port": {"number": 80}, "bind": "0.0.0.0"}]}, "spec.ingress[0].bind", "bind is not supported"),
        ({"ingress": [{"port": {"number": 80}, "captureMode": "NONE"}]}, "spec.ingress[0].captureMode", "capture"),
        ({"ingress": [{"port": {"number": 80, "targetPort": 81}}]}, "spec.ingress[0].port.targetPort", "targetPort"),
        ({"ingress": [{"port": {"number": 80, "protocol": "UDP"}}]}, "spec.ingress[0].port.protocol", "UDP"),
        ({"ingress": [{"port": {"number": 80}}, {"port": {"number": 80}}]}, "spec.ingress", "more than one"),
        (
            {"inboundConnectionPool": {"http": {"maxRetries": 3, "h2UpgradePolicy": "UPGRADE"}}},
            "spec.inboundConnectionPool",
            "not supported for the calls to the app: http.h2UpgradePolicy, http.maxRetries",
        ),
        (
            {"ingress": [{"port": {"number": 80}, "connectionPool": {"tcp": {"tcpKeepalive": {"time": "5s"}}}}]},
            "spec.ingress[0].connectionPool",
            "tcp.tcpKeepalive",
        ),
        ({"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}, "spec.outboundTrafficPolicy.mode", "404 NR"),
        (
            {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY", "egressProxy": {"host": "egress.example.com"}}},
            "spec.outboundTrafficPolicy.egressProxy",
            "egressProxy is not supported",
        ),
        ({"workloadSelector": {"labels": {}}}, "spec.workloadSelector.labels", "every workload"),
        ({"workloadSelector": {"labels": {"app": "ord*"}}}, "spec.workloadSelector.labels", "wildcards"),
        ({"workloadSelector": {"matchLabels": {"app": "x"}}}, "spec.workloadSelector", ""),
    ],
)
def test_refused_fields_name_their_path(spec: dict[str, Any], field: str, message: str) -> None:
    found = errors(**spec)
    assert field in found and message in found, found


def test_ingress_listeners_and_the_inbound_pool_parse() -> None:
    parsed = sidecar(
        egress=None,
        ingress=[
            {
                "port": {"number": 9080, "protocol": "http", "name": "web"},
                "defaultEndpoint": "127.0.0.1:8080",
                "connectionPool": {"tcp": {"maxConnections": 4}, "http": {"http1MaxPendingRequests": 2}},
            },
            {"port": {"number": 9443}, "defaultEndpoint": "[::]:9443"},
            {"port": {"number": 9090}, "defaultEndpoint": "unix:///run/app.sock"},
        ],
        inboundConnectionPool={"tcp": {"connectTimeout": "2s"}, "http": {"idleTimeout": "30s"}},
    )
    web = parsed.spec.ingress_for(9080)
    assert web is not None and web.default_endpoint == "127.0.0.1:8080" and web.port.protocol == "HTTP"
    assert web.connection_pool is not None and web.connection_pool.tcp is not None
    assert web.connection_pool.tcp.max_connections == 4
    assert parsed.spec.ingress_for(8080) is None
    unix = parsed.spec.ingress_for(9090)
    assert unix is not None and unix.default_endpoint is not None
    assert unix_socket_of(unix.default_endpoint) == "/run/app.sock"
    assert parsed.spec.inbound_connection_pool is not None
    assert parsed.spec.egress_hosts is None
    assert dump_resource(parse_resource(dump_resource(parsed))) == dump_resource(parsed)


@pytest.mark.parametrize(
    ("endpoint", "address"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:8080", ("::1", 8080)),
        ("0.0.0.0:8080", ("10.1.2.3", 8080)),
        ("[::]:7000", ("10.1.2.3", 7000)),
    ],
)
def test_default_endpoints_name_the_address_the_sidecar_calls(endpoint: str, address: tuple[str, int]) -> None:
    assert app_address(endpoint, "10.1.2.3") == address
