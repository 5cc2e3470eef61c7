"""PROXY protocol headers (HAProxy's v1 text or v2 binary form) for DestinationRule `trafficPolicy.proxyProtocol`.

A connection relayed as TCP (a sidecar's TCP listener, a gateway's TCP or TLS passthrough server) to an endpoint
outside the mesh starts with one: the caller's address as the source, the address it connected to as the
destination, so a server behind a load balancer's conventions (HAProxy, nginx `proxy_protocol`, many databases'
proxies) sees who called. It is written before anything else, TLS origination included, as Envoy's upstream
proxy_protocol transport socket does. Meshed endpoints never get one: their sidecar would refuse the bytes. The
encoding is the proxy-protocol library's.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from socket import SOCK_STREAM

from proxyprotocol.result import ProxyResult, ProxyResultIPv4, ProxyResultIPv6, ProxyResultUnknown
from proxyprotocol.v1 import ProxyProtocolV1
from proxyprotocol.v2 import ProxyProtocolV2

from shared.model.destination_rule import ProxyProtocolVersion


def header(version: ProxyProtocolVersion, source: object, destination: object) -> bytes:
    """The header for a connection from `source` to `destination` (peername / sockname of the accepted
    socket); addresses that are not one IP family's make an UNKNOWN header, as the protocol allows."""
    result = _result(source, destination)
    encoder = ProxyProtocolV1() if version == ProxyProtocolVersion.V1 else ProxyProtocolV2()
    return encoder.pack(result)


def _result(source: object, destination: object) -> ProxyResult:
    ends = [_address(end) for end in (source, destination)]
    (source_ip, source_port), (destination_ip, destination_port) = ends
    if isinstance(source_ip, IPv4Address) and isinstance(destination_ip, IPv4Address):
        return ProxyResultIPv4((source_ip, source_port), (destination_ip, destination_port), protocol=SOCK_STREAM)
    if isinstance(source_ip, IPv6Address) and isinstance(destination_ip, IPv6Address):
        return ProxyResultIPv6((source_ip, source_port), (destination_ip, destination_port), protocol=SOCK_STREAM)
    return ProxyResultUnknown()


def _address(end: object) -> tuple[IPv4Address | IPv6Address | None, int]:
    if not isinstance(end, tuple) or len(end) < 2:
        return None, 0
    try:
        return ip_address(str(end[0]).split("%", 1)[0]), int(end[1])
    except ValueError:
        return None, 0
