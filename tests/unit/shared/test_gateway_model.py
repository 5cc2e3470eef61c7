"""Gateway validation: what the Isthmus gateway runs is accepted, the rest refused with the field's path."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.model import Gateway, parse_resource


def gateway(*servers: dict[str, Any], selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "public", "namespace": "shop"},
        "spec": {"selector": selector or {"istio": "ingressgateway"}, "servers": list(servers)},
    }


HTTP = {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
HTTPS = {
    "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
    "hosts": ["shop/shop.example.com"],
    "tls": {"mode": "SIMPLE", "serverCertificate": "/etc/gw/cert.pem", "privateKey": "/etc/gw/key.pem"},
}


def refused(document: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        parse_resource(document)
    return str(caught.value)


def test_http_and_https_servers_are_accepted_with_hosts_qualified() -> None:
    resource = parse_resource(gateway(HTTP, HTTPS))
    assert isinstance(resource, Gateway)
    assert [server.hosts for server in resource.spec.servers] == [["*/*"], ["shop/shop.example.com"]]
    assert resource.spec.matches({"istio": "ingressgateway", "app": "gw"})
    assert not resource.spec.matches({"istio": "egressgateway"})


def test_https_without_certificate_files_names_the_server() -> None:
    message = refused(gateway({**HTTPS, "tls": {"mode": "SIMPLE"}}))
    assert "spec.servers.0.tls" in message and "serverCertificate and privateKey" in message


def test_mutual_needs_the_client_cas() -> None:
    tls = {**HTTPS["tls"], "mode": "MUTUAL"}  # type: ignore[dict-item]
    assert "caCertificates" in refused(gateway({**HTTPS, "tls": tls}))


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        ({"tls": {"mode": "PASSTHROUGH"}}, "spec.servers.0", "an HTTPS server needs tls with mode SIMPLE or MUTUAL"),
        ({"tls": {"mode": "AUTO_PASSTHROUGH"}}, "spec.servers.0.tls.mode", "use PASSTHROUGH with VirtualService"),
        ({"tls": {"mode": "SIMPLE", "credentialName": "shop-cert"}}, "credentialName", "no secret store"),
        ({"port": {"number": 443, "name": "db", "protocol": "MONGO"}}, "spec.servers.0.port.protocol", "TCP as bytes"),
        ({"hosts": []}, "spec.servers.0.hosts", "at least 1"),
        ({"hosts": ["shop/a*.example.com"]}, "spec.servers.0.hosts.0", "a wildcard is only"),
        ({"bind": "0.0.0.0"}, "spec.servers.0.bind", "not supported"),
    ],
)
def test_unsupported_or_wrong_fields_are_refused_by_path(change: dict[str, Any], path: str, words: str) -> None:
    message = refused(gateway({**HTTPS, **change}))
    assert path in message and words in message


def test_http_server_with_a_tls_mode_is_refused_and_redirect_is_accepted() -> None:
    assert "use port.protocol HTTPS" in refused(gateway({**HTTP, "tls": HTTPS["tls"]}))
    parse_resource(gateway({**HTTP, "tls": {"httpsRedirect": True}}))


def test_servers_of_one_protocol_share_a_port_and_of_two_do_not() -> None:
    other = {**HTTPS, "hosts": ["api.example.com"]}
    parse_resource(gateway(HTTPS, other))  # each its certificate, chosen by SNI
    parse_resource(gateway(HTTP, {**HTTP, "hosts": ["api.example.com"]}))
    mixed = {**HTTPS, "port": {"number": 80, "name": "https", "protocol": "HTTPS"}}
    assert "one port speaks one protocol" in refused(gateway(HTTP, mixed))


def test_tls_servers_pass_through_and_tcp_servers_terminate_nothing() -> None:
    tls_port = {"number": 9443, "name": "tls", "protocol": "TLS"}
    parse_resource(gateway({"port": tls_port, "hosts": ["*.example.com"], "tls": {"mode": "PASSTHROUGH"}}))
    parse_resource(gateway({**HTTPS, "port": tls_port}))  # TLS terminated here, then tcp routes
    assert "a TLS server needs tls.mode" in refused(gateway({"port": tls_port, "hosts": ["*"]}))
    with_files = {"mode": "PASSTHROUGH", "serverCertificate": "/etc/gw/cert.pem"}
    assert "serverCertificate is not used" in refused(gateway({"port": tls_port, "hosts": ["*"], "tls": with_files}))
    tcp_port = {"number": 5432, "name": "tcp", "protocol": "TCP"}
    parse_resource(gateway({"port": tcp_port, "hosts": ["*"]}))
    assert "terminates no TLS" in refused(gateway({**HTTPS, "port": tcp_port}))


def test_grpc_and_http2_servers_are_plain_http_servers() -> None:
    grpc = {"port": {"number": 9090, "name": "grpc", "protocol": "grpc"}, "hosts": ["*"]}
    http2 = {"port": {"number": 8081, "name": "h2c", "protocol": "HTTP2"}, "hosts": ["*"]}
    resource = parse_resource(gateway(grpc, http2))
    assert isinstance(resource, Gateway)
    assert [str(server.port.protocol) for server in resource.spec.servers] == ["GRPC", "HTTP2"]
    terminated = {**grpc, "tls": {"mode": "SIMPLE", "serverCertificate": "/c.pem", "privateKey": "/k.pem"}}
    assert "a GRPC server terminates no TLS: use port.protocol HTTPS" in refused(gateway(terminated))
    grpc_web = {"port": {"number": 9091, "name": "web", "protocol": "GRPC-WEB"}, "hosts": ["*"]}
    assert isinstance(parse_resource(gateway(grpc_web)), Gateway)
    redis = {"port": {"number": 6379, "name": "cache", "protocol": "REDIS"}, "hosts": ["*"]}
    assert "REDIS is not supported" in refused(gateway(redis))
