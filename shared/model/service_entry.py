"""ServiceEntry: services outside the Consul catalog (external APIs, databases) that callers reach through the sidecar.

The Isthmus subset of Istio's ServiceEntry, refusing at apply time what it cannot honour: each host is a fully
qualified DNS name (no wildcard: those need resolution NONE); resolution is STATIC (endpoints with IP addresses) or
DNS / DNS_ROUND_ROBIN (endpoints, or else the host itself, resolved when the sidecar connects); NONE, and Istio's
default of NONE when resolution is left out, is refused, as are `addresses`, `subjectAltNames`, and the endpoint
field `network`. An endpoint's `weight` is its share of the traffic (lb.py). Instead of `endpoints`, a
`workloadSelector` may choose the WorkloadEntry resources of the ServiceEntry's namespace by label (Istio's way of
adding VMs to a service). `exportTo` limits the callers' namespaces that see the hosts (shared/model/export_to.py;
`~`: none). Port protocols are Istio's names in any case (HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, TCP, MONGO,
MYSQL, REDIS); UDP is refused.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator

from shared.consul import MAX_WEIGHT, workload_locality
from shared.model.base import LabelSelector, Spec
from shared.model.export_to import EntryExportTo

PortNumber = Annotated[int, Field(ge=1, le=65535)]


class PortProtocol(StrEnum):
    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-WEB"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"
    MONGO = "MONGO"
    MYSQL = "MYSQL"
    REDIS = "REDIS"


def port_protocol(value: Any) -> Any:
    """A port's protocol name in any case, upper-cased; raises ValueError for UDP and unknown names."""
    if not isinstance(value, str):
        return value
    upper = value.strip().upper()
    if upper == "UDP":
        raise ValueError("protocol UDP is not supported: the sidecar carries HTTP and TCP only")
    if upper not in {protocol.value for protocol in PortProtocol}:
        raise ValueError(f"protocol {value!r} is not one of {', '.join(p.value for p in PortProtocol)}")
    return upper


HTTP_PROTOCOLS = frozenset({PortProtocol.HTTP, PortProtocol.HTTP2, PortProtocol.GRPC, PortProtocol.GRPC_WEB})
"""Ports the sidecar routes as HTTP requests (virtual hosts); every other protocol is carried as TCP bytes."""
HTTP2_PORT_PROTOCOLS = frozenset({PortProtocol.HTTP2, PortProtocol.GRPC})
"""Ports called over HTTP/2 (with prior knowledge, or over originated TLS)."""


class Location(StrEnum):
    MESH_EXTERNAL = "MESH_EXTERNAL"
    MESH_INTERNAL = "MESH_INTERNAL"


class Resolution(StrEnum):
    NONE = "NONE"
    STATIC = "STATIC"
    DNS = "DNS"
    DNS_ROUND_ROBIN = "DNS_ROUND_ROBIN"


_HOST_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SUPPORTED_RESOLUTIONS = "STATIC (endpoints with IP addresses) or DNS / DNS_ROUND_ROBIN (resolved when connecting)"


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def check_host(value: str) -> str:
    """A ServiceEntry host, lower-cased: a fully qualified DNS name without wildcard."""
    host = value.lower()
    if "*" in host:
        raise ValueError(
            f"{value!r}: wildcard hosts need resolution NONE (forwarding to whatever address the app dialed), "
            "which Isthmus does not support; list each host name"
        )
    if "." not in host or len(host) > 253 or not _HOST_NAME.match(host):
        raise ValueError(
            f"{value!r} must be a fully qualified DNS name with a dot, like api.example.com "
            "(names without a dot are catalog services)"
        )
    return host


class ServicePort(Spec):
    number: PortNumber
    protocol: PortProtocol
    name: Annotated[str, Field(min_length=1)]
    target_port: PortNumber | None = None
    """Where the endpoints receive traffic (an endpoint's own `ports` entry wins); unset: `number`."""

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: Any) -> Any:
        return port_protocol(value)

    @property
    def is_http(self) -> bool:
        return self.protocol in HTTP_PROTOCOLS


class WorkloadEntry(Spec):
    """One endpoint of a ServiceEntry: inline in `endpoints`, or the spec of a WorkloadEntry resource."""

    address: Annotated[str, Field(min_length=1)]
    ports: dict[str, PortNumber] = Field(default_factory=dict)
    """Service port name -> the port this endpoint receives it on."""
    labels: dict[str, str] = Field(default_factory=dict)
    locality: str | None = None
    """`region[/zone[/subzone]]`; reaches the sidecar as the endpoint's `locality` label, as catalog ones do."""
    service_account: str | None = None
    """The identity an ISTIO_MUTUAL caller expects from a MESH_INTERNAL endpoint (unset: "default")."""
    network: str | None = None
    weight: Annotated[int, Field(ge=1, le=MAX_WEIGHT)] | None = None
    """Its share of the traffic relative to the other endpoints' (unset: 1)."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value.startswith("unix://"):
            raise ValueError(f"{value!r}: unix domain socket endpoints are not supported; give an IP or host name")
        if not is_ip(value) and not (len(value) <= 253 and _HOST_NAME.match(value.lower())):
            raise ValueError(f"{value!r} is neither an IP address nor a DNS host name")
        return value

    @field_validator("locality")
    @classmethod
    def _locality(cls, value: str | None) -> str | None:
        return None if value is None else workload_locality(value)

    @field_validator("service_account")
    @classmethod
    def _service_account(cls, value: str | None) -> str | None:
        if value is not None and not _HOST_NAME.match(value):
            raise ValueError(f"{value!r} must be a lower-case DNS name: letters, digits, '-' and '.'")
        return value

    @field_validator("network")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("network is not supported: Isthmus has one network and dials every endpoint directly")
        return value


class ServiceEntrySpec(Spec):
    hosts: Annotated[list[Annotated[str, AfterValidator(check_host)]], Field(min_length=1)]
    addresses: list[str] = Field(default_factory=list)
    ports: Annotated[list[ServicePort], Field(min_length=1)]
    location: Location = Location.MESH_EXTERNAL
    resolution: Resolution | None = Field(default=None, validate_default=True)
    endpoints: list[WorkloadEntry] = Field(default_factory=list)
    export_to: EntryExportTo = Field(default_factory=list)
    subject_alt_names: list[str] = Field(default_factory=list)
    workload_selector: LabelSelector | None = None
    """The endpoints are the WorkloadEntries of the ServiceEntry's namespace whose labels include these."""

    @field_validator("hosts")
    @classmethod
    def _unique_hosts(cls, value: list[str]) -> list[str]:
        for i, host in enumerate(value):
            if host in value[:i]:
                raise ValueError(f"host {host!r} is listed twice (hosts[{value.index(host)}] and hosts[{i}])")
        return value

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        if value:
            raise ValueError(
                "addresses need transparent traffic capture, which Isthmus does not do; "
                "call the host name through the sidecar"
            )
        return value

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: list[ServicePort]) -> list[ServicePort]:
        for i, port in enumerate(value):
            for j, other in enumerate(value[:i]):
                if other.name == port.name:
                    raise ValueError(f"port name {port.name!r} is used twice (ports[{j}] and ports[{i}])")
                if other.number == port.number:
                    raise ValueError(f"port number {port.number} is declared twice (ports[{j}] and ports[{i}])")
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: Resolution | None) -> Resolution:
        if value is None:
            raise ValueError(f"not set, and Istio's default NONE is not supported: set {_SUPPORTED_RESOLUTIONS}")
        if value == Resolution.NONE:
            raise ValueError(
                "NONE (forwarding to whatever address the app dialed) needs transparent traffic capture, which "
                f"Isthmus does not do: use {_SUPPORTED_RESOLUTIONS}"
            )
        return value

    @field_validator("subject_alt_names")
    @classmethod
    def _subject_alt_names(cls, value: list[str]) -> list[str]:
        if value:
            raise ValueError(
                "subjectAltNames is not supported: an ISTIO_MUTUAL caller expects the SPIFFE identity of the "
                "endpoint's serviceAccount (MESH_INTERNAL)"
            )
        return value

    @model_validator(mode="after")
    def _endpoints(self) -> ServiceEntrySpec:
        names = {port.name for port in self.ports}
        if self.workload_selector is not None and self.endpoints:
            raise ValueError(
                "endpoints and workloadSelector are mutually exclusive: list the endpoints, or select "
                "WorkloadEntries by label"
            )
        if self.resolution == Resolution.STATIC and not self.endpoints and self.workload_selector is None:
            raise ValueError(
                "endpoints: resolution STATIC needs at least one endpoint with an IP address "
                "(or a workloadSelector choosing WorkloadEntries)"
            )
        if self.resolution == Resolution.DNS_ROUND_ROBIN and len(self.endpoints) > 1:
            raise ValueError("endpoints: resolution DNS_ROUND_ROBIN takes at most one endpoint")
        for i, endpoint in enumerate(self.endpoints):
            if self.resolution == Resolution.STATIC and not is_ip(endpoint.address):
                raise ValueError(
                    f"endpoints[{i}].address: {endpoint.address!r} is not an IP address, which resolution STATIC "
                    "needs (use DNS for host names)"
                )
            for name in endpoint.ports:
                if name not in names:
                    raise ValueError(f"endpoints[{i}].ports: {name!r} is not the name of one of ports")
        return self

    def port(self, number: int) -> ServicePort | None:
        return next((port for port in self.ports if port.number == number), None)

    @property
    def http_ports(self) -> list[ServicePort]:
        """The HTTP-family ports, in spec order."""
        return [port for port in self.ports if port.is_http]
