"""How a meshed workload appears in Consul: service Meta keys and the service ID of a sidecar."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from shared.bus.names import key_token

META_MESH = "isthmus-mesh"  # "true" for a workload with an Isthmus sidecar in front of it
META_APP = "app"
META_VERSION = "version"
META_NAMESPACE = "namespace"
META_SERVICE_ACCOUNT = "service-account"
META_LOCALITY = "locality"  # `region/zone/subzone` of the workload (`--locality`), a label like app and version
META_PROXY_ID = "isthmus-proxy-id"
META_PROMETHEUS_PORT = "prometheus-port"  # the sidecar's Prometheus port (scraped via consul_sd_configs)
META_UPSTREAMS = "isthmus-upstreams"  # comma-separated services the workload calls; absent: every service
# ... each `name` (HTTP, through the outbound listener) or `name:port[:localport]` (TCP, see TcpUpstream)
META_ADMIN_PORT = "isthmus-admin-port"  # the sidecar's loopback admin port (for `isthmus proxy-config` on the host)
META_APP_PORT = "isthmus-app-port"  # the app port the sidecar fronts (PeerAuthentication portLevelMtls keys)
META_PROTOCOL = "isthmus-protocol"  # what the service's port carries: "http" (default), "http2", "grpc" or "tcp"
META_EXTRA_PORTS = "isthmus-extra-ports"  # the further app ports one sidecar fronts (`--extra-port`), see WorkloadPort
# ... comma-separated `protocol:app-port:inbound-port`; absent on a sidecar that fronts one port
META_GATEWAY = "isthmus-gateway"  # "true" for a gateway proxy (`--gateway`): no app; Gateway servers configure it
MESH_TAG = "isthmus"

PROTOCOL_HTTP = "http"
PROTOCOL_HTTP2 = "http2"
PROTOCOL_GRPC = "grpc"
PROTOCOL_TCP = "tcp"
PROTOCOLS = (PROTOCOL_HTTP, PROTOCOL_HTTP2, PROTOCOL_GRPC, PROTOCOL_TCP)
HTTP2_PROTOCOLS = frozenset({PROTOCOL_HTTP2, PROTOCOL_GRPC})
"""Ports that speak HTTP/2 (with prior knowledge): callers' sidecars reach them over HTTP/2, and the sidecar in
front of one calls its app over HTTP/2."""

DEFAULT_NAMESPACE = "default"


def proxy_id_for(service: str, namespace: str, inbound_port: int, host: str | None = None) -> str:
    """A stable, KV-safe proxy id (also the Consul service ID): `<service>-<namespace>-<host>-<port>`."""
    node = host or socket.gethostname()
    return key_token(f"{service}-{namespace}-{node}-{inbound_port}")


def labels_from_meta(meta: dict[str, str]) -> dict[str, str]:
    """Workload labels for subset selection: every Meta entry except Isthmus' own bookkeeping keys, in key order
    (so a config built from them serializes the same whatever order the catalog listed them in)."""
    return {key: meta[key] for key in sorted(meta) if key not in _BOOKKEEPING}


_BOOKKEEPING = frozenset(
    {
        META_MESH,
        META_PROXY_ID,
        META_UPSTREAMS,
        META_ADMIN_PORT,
        META_APP_PORT,
        META_PROMETHEUS_PORT,
        META_PROTOCOL,
        META_EXTRA_PORTS,
        META_GATEWAY,
    }
)


_LOCALITY_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def workload_locality(value: str) -> str:
    """`region[/zone[/subzone]]` as a workload states where it runs; ValueError names what is wrong."""
    parts = value.split("/")
    if len(parts) > 3 or not all(_LOCALITY_SEGMENT.match(part) for part in parts):
        raise ValueError(
            f"{value!r} is not a locality: region[/zone[/subzone]], each of letters, digits, '.', '_' or '-'"
        )
    return value


MAX_WEIGHT = 2**31 - 1
"""The largest instance weight (Consul's Weights.Passing, an endpoint's weight): a 32-bit signed integer."""


def endpoint_weight(text: str) -> int:
    """An instance's weight as typed (`--weight`, ISTHMUS_WEIGHT): a whole number from 1; ValueError otherwise."""
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_WEIGHT:
        raise ValueError(f"{text!r} is not a weight (a whole number from 1 to {MAX_WEIGHT})")
    return int(text)


def protocol_of(meta: dict[str, str]) -> str:
    """Meta `isthmus-protocol` -> one of PROTOCOLS (absent or anything else: http, Istio's default for a mesh
    port)."""
    value = meta.get(META_PROTOCOL, "").strip().lower()
    return value if value in PROTOCOLS else PROTOCOL_HTTP


@dataclass(frozen=True, slots=True)
class TcpUpstream:
    """`name:port[:localport]`: the app reaches TCP service `name` on its service `port` by connecting to
    127.0.0.1:`localport` (default: `port` itself, as an Istio app would dial the service's port; 0: any free
    port). `port` is what a VirtualService's `tcp[].match[].port` compares."""

    name: str
    port: int
    local_port: int

    @property
    def spec(self) -> str:
        return (
            f"{self.name}:{self.port}" if self.local_port == self.port else f"{self.name}:{self.port}:{self.local_port}"
        )


def _number(text: str, lowest: int, what: str, part: str) -> int:
    if not text.isdigit() or not lowest <= int(text) <= 65535:
        raise ValueError(f"upstream {part!r}: {what} must be a number from {lowest} to 65535")
    return int(text)


def _upstream(part: str) -> str | TcpUpstream:
    """One entry: a bare name, or a TcpUpstream; raises ValueError naming the entry."""
    name, *ports = (piece.strip() for piece in part.strip().lower().split(":"))
    if not name or len(ports) > 2:
        raise ValueError(f"upstream {part!r}: write NAME or NAME:PORT or NAME:PORT:LOCALPORT")
    if not ports:
        return name
    port = _number(ports[0], 1, "the service port", part)
    local = _number(ports[1], 0, "the local port", part) if len(ports) == 2 else port
    return TcpUpstream(name, port, local)


def _entries(value: str | None) -> list[str]:
    return [part for part in (value or "").split(",") if part.strip()]


def upstream_specs(value: str | None) -> tuple[str, ...]:
    """`--upstream` values -> sorted, de-duplicated, normalized entries; raises ValueError for a malformed one."""
    specs = set()
    for part in _entries(value):
        entry = _upstream(part)
        specs.add(entry if isinstance(entry, str) else entry.spec)
    return tuple(sorted(specs))


def _lenient(value: str | None) -> list[str | TcpUpstream]:
    found: list[str | TcpUpstream] = []
    for part in _entries(value):
        try:
            found.append(_upstream(part))
        except ValueError:
            continue  # Meta written by another tool: a malformed entry is ignored, never fatal
    return found


def parse_upstreams(value: str | None) -> tuple[str, ...]:
    """Meta `isthmus-upstreams` -> sorted, de-duplicated, lower-case service names (empty: every service)."""
    return tuple(sorted({entry if isinstance(entry, str) else entry.name for entry in _lenient(value)}))


def parse_tcp_upstreams(value: str | None) -> tuple[TcpUpstream, ...]:
    """Meta `isthmus-upstreams` -> its `name:port[:localport]` entries, sorted and de-duplicated."""
    found = {entry for entry in _lenient(value) if isinstance(entry, TcpUpstream)}
    return tuple(sorted(found, key=lambda u: (u.name, u.port, u.local_port)))


@dataclass(frozen=True, slots=True)
class WorkloadPort:
    """A further app port a sidecar fronts: what it speaks, the app's port on 127.0.0.1 and the sidecar's mTLS
    inbound port in front of it (0 in a flag: any free port, announced once bound). Callers address it by its
    app port, `NAME:APP_PORT` for TCP, as they address the primary port."""

    protocol: str
    app_port: int
    inbound_port: int

    @property
    def spec(self) -> str:
        """The Meta form, `protocol:app-port:inbound-port`."""
        return f"{self.protocol}:{self.app_port}:{self.inbound_port}"


def _port_number(text: str, lowest: int, what: str, value: str) -> int:
    if not text.isdigit() or not lowest <= int(text) <= 65535:
        raise ValueError(f"{value!r}: {what} must be a number from {lowest} to 65535")
    return int(text)


def extra_port(value: str) -> WorkloadPort:
    """The flag form `APP_PORT[:PROTOCOL[:INBOUND_PORT]]` (protocol default http, inbound port default 0: any
    free port); raises ValueError naming the value and the problem."""
    app, *rest = (piece.strip() for piece in value.strip().lower().split(":"))
    if len(rest) > 2:
        raise ValueError(f"{value!r}: write APP_PORT, APP_PORT:PROTOCOL or APP_PORT:PROTOCOL:INBOUND_PORT")
    protocol = rest[0] if rest else PROTOCOL_HTTP
    if protocol not in PROTOCOLS:
        raise ValueError(f"{value!r}: the protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    inbound = _port_number(rest[1], 0, "the inbound port", value) if len(rest) == 2 else 0
    return WorkloadPort(protocol, _port_number(app, 1, "the app port", value), inbound)


def extra_ports_meta(ports: tuple[WorkloadPort, ...]) -> str:
    return ",".join(port.spec for port in ports)


def parse_extra_ports(value: str | None) -> tuple[WorkloadPort, ...]:
    """Meta `isthmus-extra-ports` -> its entries in the order written; a malformed entry, or one repeating an
    app port, is ignored (Meta may come from another tool: never fatal)."""
    found: list[WorkloadPort] = []
    for part in _entries(value):
        pieces = [piece.strip() for piece in part.strip().lower().split(":")]
        if len(pieces) != 3 or pieces[0] not in PROTOCOLS:
            continue
        try:
            port = WorkloadPort(pieces[0], _port_number(pieces[1], 1, "", part), _port_number(pieces[2], 1, "", part))
        except ValueError:
            continue
        if all(known.app_port != port.app_port for known in found):
            found.append(port)
    return tuple(found)
