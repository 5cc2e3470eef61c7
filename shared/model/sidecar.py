"""Sidecar (networking.istio.io/v1): which hosts a workload's sidecar gets config for, and how it calls its app.

The Isthmus subset of Istio's Sidecar: `workloadSelector` (the workloads of the Sidecar's namespace it applies
to; left out, the whole namespace, or in the root namespace every namespace without a Sidecar of its own),
one `egress` listener without port whose `hosts` are `namespace/dnsName` entries, and
`outboundTrafficPolicy.mode: REGISTRY_ONLY` (what Isthmus does anyway). Host entries follow Istio's validation
(`validateNamespaceSlashWildcardHostname`): the namespace is `*` (any), `.` (the Sidecar's own), `~` (none) or
a namespace name; the dnsName is `*`, `*.suffix` or a fully qualified host (no short names).

Inbound side: `ingress` listeners, one per workload port (the app port the sidecar fronts, as
PeerAuthentication's `portLevelMtls` keys), each with `defaultEndpoint` (where the sidecar calls the app for
that port: `127.0.0.1:PORT` or `[::1]:PORT` on loopback, `0.0.0.0:PORT` or `[::]:PORT` at the instance's
registered address, `unix:///PATH` a Unix domain socket) and `connectionPool`, which overrides
`inboundConnectionPool` (the limits on the sidecar's calls to its app, every port). Ports without an ingress
listener keep the sidecar's flags and the `inboundConnectionPool`. Of a connection pool, `tcp.maxConnections`,
`tcp.connectTimeout`, `http.http1MaxPendingRequests`, `http.http2MaxRequests` and `http.idleTimeout` apply;
the others are refused.

Refused, with the field's path: `egress[].port`, `egress[].bind` and `egress[].captureMode` (Isthmus has no
per-port listeners and no traffic capture), more than one egress listener (Istio needs a port on all but one),
`ingress[].bind`, `ingress[].captureMode`, `ingress[].tls`, `ingress[].port.targetPort`, default endpoints at
other addresses and abstract Unix sockets, `outboundTrafficPolicy.mode: ALLOW_ANY` and `egressProxy` (the
sidecar only calls registry hosts). Pilot applies it in services/pilot/generate/sidecar_scope.py (egress) and
inbound.py (ingress).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator

from shared.model.base import LabelSelector, Spec, refused
from shared.model.destination_rule import ConnectionPoolSettings
from shared.model.service_entry import PortNumber, PortProtocol, port_protocol

ANY_NAMESPACE = "*"
OWN_NAMESPACE = "."
NO_NAMESPACE = "~"

NO_CAPTURE = "captureMode is not supported: Isthmus does not capture traffic; callers address the sidecar"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_dns_name(name: str, whole: str) -> None:
    """Raises ValueError (naming the entry `whole`) unless `name` is a lower-case DNS name."""
    if len(name) > 253 or not all(len(label) <= 63 and _DNS_LABEL.match(label) for label in name.split(".")):
        raise ValueError(
            f"{whole!r}: {name!r} is not a DNS name (lower-case labels of letters, digits and '-', separated by dots)"
        )


def is_namespace_name(namespace: str) -> bool:
    return len(namespace) <= 63 and _DNS_LABEL.match(namespace) is not None


def check_egress_host(value: str) -> str:
    """An egress host `namespace/dnsName`, dnsName lower-cased (Istio compares host names without case)."""
    namespace, slash, dns_name = value.partition("/")
    if not slash:
        raise ValueError(f"{value!r}: host must be of form namespace/dnsName, like ./* or shop/reviews.shop")
    if not namespace or not dns_name:
        raise ValueError(f"{value!r}: the namespace and the dnsName of a host entry cannot be empty")
    if namespace not in (ANY_NAMESPACE, OWN_NAMESPACE, NO_NAMESPACE) and not is_namespace_name(namespace):
        raise ValueError(
            f"{value!r}: invalid namespace {namespace!r}: use '*' (any), '.' (the Sidecar's own), '~' (none) "
            "or a namespace name (a lower-case DNS label)"
        )
    dns_name = dns_name.lower()
    if dns_name == "*":
        return f"{namespace}/{dns_name}"
    if "." not in dns_name:
        raise ValueError(
            f"{value!r}: short names (non FQDN) are not allowed: write {dns_name}.<namespace> or another of the "
            "service's fully qualified domains"
        )
    if dns_name.startswith("*."):
        check_dns_name(dns_name[2:], value)
    elif "*" in dns_name:
        raise ValueError(f"{value!r}: a wildcard is only '*' or a leading '*.' (like */*.example.com)")
    else:
        check_dns_name(dns_name, value)
    return f"{namespace}/{dns_name}"


EgressHost = Annotated[str, AfterValidator(check_egress_host)]


_NO_OUTBOUND_BIND = "bind is not supported: the sidecar's outbound listener address is set by its flags"
_NO_INBOUND_BIND = "bind is not supported: the sidecar's inbound listener address is set by its flags"


class IstioEgressListener(Spec):
    hosts: Annotated[list[EgressHost], Field(min_length=1)]
    port: Annotated[
        Any,
        refused(
            "port is not supported: the sidecar has no per-port outbound listeners; one egress listener "
            "without port covers every port of its hosts"
        ),
    ] = None
    bind: Annotated[Any, refused(_NO_OUTBOUND_BIND)] = None
    capture_mode: Annotated[Any, refused(NO_CAPTURE)] = None


LOOPBACK_HOSTS = {"127.0.0.1": "127.0.0.1", "[::1]": "::1"}
"""defaultEndpoint hosts that mean the app on loopback, and the address the sidecar calls."""
INSTANCE_HOSTS = frozenset({"0.0.0.0", "[::]"})
"""defaultEndpoint hosts that mean the app at the instance's registered address."""


UNIX_SCHEME = "unix://"


def check_default_endpoint(value: str) -> str:
    """Istio's forms of an ingress listener's defaultEndpoint: loopback or instance address and port, or a Unix
    domain socket by absolute path (`unix:///run/app.sock`)."""
    if value.startswith(UNIX_SCHEME):
        path = value[len(UNIX_SCHEME) :]
        if not path.startswith("/") or "\x00" in path or len(path.encode()) > 107:
            raise ValueError(
                f"{value!r}: a Unix domain socket is unix:// and an absolute path of at most 107 bytes, like "
                "unix:///run/app.sock (abstract sockets are not supported)"
            )
        return value
    host, colon, port = value.rpartition(":")
    if not colon or (host not in LOOPBACK_HOSTS and host not in INSTANCE_HOSTS):
        raise ValueError(
            f"{value!r}: defaultEndpoint must be 127.0.0.1:PORT or [::1]:PORT (the app on loopback), 0.0.0.0:PORT "
            "or [::]:PORT (the app at the instance's address), or unix:///PATH; arbitrary IPs are not supported"
        )
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: the port must be a number from 1 to 65535")
    return value


def unix_socket_of(default_endpoint: str) -> str | None:
    """The socket path of a checked `unix://` defaultEndpoint; None for the other forms."""
    return default_endpoint[len(UNIX_SCHEME) :] if default_endpoint.startswith(UNIX_SCHEME) else None


def app_address(default_endpoint: str, instance_address: str) -> tuple[str, int]:
    """(host, port) the sidecar calls for a checked TCP defaultEndpoint; `0.0.0.0` and `[::]` are the
    instance's."""
    host, _, port = default_endpoint.rpartition(":")
    return LOOPBACK_HOSTS.get(host, instance_address), int(port)


_INBOUND_POOL_FIELDS = {
    "tcp": {"max_connections", "connect_timeout"},
    "http": {"http1_max_pending_requests", "http2_max_requests", "idle_timeout"},
}


def check_inbound_pool(pool: ConnectionPoolSettings | None) -> ConnectionPoolSettings | None:
    """Only the settings the sidecar's calls to its app honour; the others (retries, upgrades, keepalive, ...)
    are refused by name."""
    if pool is None:
        return pool
    refused = [
        f"{part}.{pool_field_alias(settings, name)}"
        for part, allowed in _INBOUND_POOL_FIELDS.items()
        if (settings := getattr(pool, part)) is not None
        for name in sorted(settings.model_fields_set - allowed)
    ]
    if refused:
        raise ValueError(
            f"not supported for the calls to the app: {', '.join(refused)} (supported: tcp.maxConnections, "
            "tcp.connectTimeout, http.http1MaxPendingRequests, http.http2MaxRequests, http.idleTimeout)"
        )
    return pool


def pool_field_alias(settings: Spec, name: str) -> str:
    field = type(settings).model_fields[name]
    return field.alias or name


InboundPool = Annotated[ConnectionPoolSettings, AfterValidator(check_inbound_pool)]


class SidecarPort(Spec):
    number: PortNumber
    """The workload port: an app port the sidecar fronts (`--app-port` or an `--extra-port` app port)."""
    protocol: PortProtocol | None = None
    """Informational: what the port speaks is what the sidecar declares (`--protocol`, `--extra-port`)."""
    name: str | None = None
    target_port: Annotated[Any, refused("targetPort is not supported on an ingress port: give defaultEndpoint")] = None

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: Any) -> Any:
        return port_protocol(value)


class IstioIngressListener(Spec):
    port: SidecarPort
    default_endpoint: Annotated[str, AfterValidator(check_default_endpoint)] | None = None
    connection_pool: InboundPool | None = None
    bind: Annotated[Any, refused(_NO_INBOUND_BIND)] = None
    capture_mode: Annotated[Any, refused(NO_CAPTURE)] = None
    tls: Annotated[
        Any,
        refused(
            "tls is not supported: the sidecar's inbound TLS is the mesh's mTLS (PeerAuthentication); "
            "terminate other TLS at a Gateway"
        ),
    ] = None


class OutboundTrafficPolicyMode(StrEnum):
    REGISTRY_ONLY = "REGISTRY_ONLY"
    ALLOW_ANY = "ALLOW_ANY"


class OutboundTrafficPolicy(Spec):
    mode: OutboundTrafficPolicyMode = OutboundTrafficPolicyMode.REGISTRY_ONLY
    egress_proxy: Any = None

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: OutboundTrafficPolicyMode) -> OutboundTrafficPolicyMode:
        if value == OutboundTrafficPolicyMode.ALLOW_ANY:
            raise ValueError(
                "ALLOW_ANY is not supported: Isthmus calls only registry hosts (catalog services and ServiceEntry "
                "hosts), and a Host no service or ServiceEntry names gets 404 NR; declare external hosts with a "
                "ServiceEntry and use REGISTRY_ONLY"
            )
        return value

    @field_validator("egress_proxy")
    @classmethod
    def _egress_proxy(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("egressProxy is not supported: it only serves ALLOW_ANY, which Isthmus does not do")
        return value


class SidecarSpec(Spec):
    workload_selector: LabelSelector | None = None
    egress: list[IstioEgressListener] = Field(default_factory=list)
    outbound_traffic_policy: OutboundTrafficPolicy | None = None
    ingress: list[IstioIngressListener] = Field(default_factory=list)
    inbound_connection_pool: InboundPool | None = None

    @field_validator("egress")
    @classmethod
    def _one_listener(cls, value: list[IstioEgressListener]) -> list[IstioEgressListener]:
        if len(value) > 1:
            raise ValueError(
                f"{len(value)} egress listeners: Istio needs a port on all but one, and ports are not supported; "
                "list every host in one listener"
            )
        return value

    @field_validator("ingress")
    @classmethod
    def _one_listener_per_port(cls, value: list[IstioIngressListener]) -> list[IstioIngressListener]:
        seen: set[int] = set()
        for listener in value:
            if listener.port.number in seen:
                raise ValueError(f"port {listener.port.number} has more than one ingress listener")
            seen.add(listener.port.number)
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> SidecarSpec:
        if (
            not self.egress
            and self.outbound_traffic_policy is None
            and not self.ingress
            and self.inbound_connection_pool is None
        ):
            raise ValueError(
                "empty configuration: give an egress listener, outboundTrafficPolicy, ingress listeners or "
                "inboundConnectionPool"
            )
        return self

    def ingress_for(self, port: int) -> IstioIngressListener | None:
        """The ingress listener of a workload port, if any."""
        return next((listener for listener in self.ingress if listener.port.number == port), None)

    @property
    def egress_hosts(self) -> tuple[str, ...] | None:
        """The hosts of the egress listener; None without one (then the Sidecar limits nothing)."""
        return tuple(self.egress[0].hosts) if self.egress else None
