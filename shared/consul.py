"""How a meshed workload appears in Consul: service Meta keys and the service ID of a sidecar."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from shared.bus.names import key_token

META_MESH = "isthmus-mesh"  # "true" for a workload with an Isthmus sidecar in front of it
META_APP = "app"
META_VERSION = "version"
META_NAMESPACE = "namespace"
META_SERVICE_ACCOUNT = "service-account"
META_PROXY_ID = "isthmus-proxy-id"
META_PROMETHEUS_PORT = "prometheus-port"  # the sidecar's Prometheus port (scraped via consul_sd_configs)
META_UPSTREAMS = "isthmus-upstreams"  # comma-separated services the workload calls; absent: every service
# ... each `name` (HTTP, through the outbound listener) or `name:port[:localport]` (TCP, see TcpUpstream)
META_ADMIN_PORT = "isthmus-admin-port"  # the sidecar's loopback admin port (for `isthmus proxy-config` on the host)
META_APP_PORT = "isthmus-app-port"  # the app port the sidecar fronts (PeerAuthentication portLevelMtls keys)
META_PROTOCOL = "isthmus-protocol"  # what the service's port carries: "http" (default) or "tcp" (bytes, no parsing)
MESH_TAG = "isthmus"

PROTOCOL_HTTP = "http"
PROTOCOL_TCP = "tcp"
PROTOCOLS = (PROTOCOL_HTTP, PROTOCOL_TCP)

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
    {META_MESH, META_PROXY_ID, META_UPSTREAMS, META_ADMIN_PORT, META_APP_PORT, META_PROMETHEUS_PORT, META_PROTOCOL}
)


def protocol_of(meta: dict[str, str]) -> str:
    """Meta `isthmus-protocol` -> "tcp" or "http" (absent or anything else: http, Istio's default for a mesh port)."""
    return PROTOCOL_TCP if meta.get(META_PROTOCOL, "").strip().lower() == PROTOCOL_TCP else PROTOCOL_HTTP


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
