"""How a meshed workload appears in Consul: service Meta keys and the service ID of a sidecar."""

from __future__ import annotations

import socket

from shared.bus.names import key_token

META_MESH = "isthmus-mesh"  # "true" for a workload with an Isthmus sidecar in front of it
META_APP = "app"
META_VERSION = "version"
META_NAMESPACE = "namespace"
META_SERVICE_ACCOUNT = "service-account"
META_PROXY_ID = "isthmus-proxy-id"
META_PROMETHEUS_PORT = "prometheus-port"  # the sidecar's Prometheus port (scraped via consul_sd_configs)
META_UPSTREAMS = "isthmus-upstreams"  # comma-separated services the workload calls; absent: every service
META_ADMIN_PORT = "isthmus-admin-port"  # the sidecar's loopback admin port (for `isthmus proxy-config` on the host)
META_APP_PORT = "isthmus-app-port"  # the app port the sidecar fronts (PeerAuthentication portLevelMtls keys)
MESH_TAG = "isthmus"

DEFAULT_NAMESPACE = "default"


def proxy_id_for(service: str, namespace: str, inbound_port: int, host: str | None = None) -> str:
    """A stable, KV-safe proxy id (also the Consul service ID): `<service>-<namespace>-<host>-<port>`."""
    node = host or socket.gethostname()
    return key_token(f"{service}-{namespace}-{node}-{inbound_port}")


def labels_from_meta(meta: dict[str, str]) -> dict[str, str]:
    """Workload labels for subset selection: every Meta entry except Isthmus' own bookkeeping keys."""
    return {key: value for key, value in meta.items() if key not in _BOOKKEEPING}


_BOOKKEEPING = frozenset(
    {META_MESH, META_PROXY_ID, META_UPSTREAMS, META_ADMIN_PORT, META_APP_PORT, META_PROMETHEUS_PORT}
)


def parse_upstreams(value: str | None) -> tuple[str, ...]:
    """Meta `isthmus-upstreams` -> sorted, de-duplicated, lower-case service names (empty: every service)."""
    return tuple(sorted({part.strip().lower() for part in (value or "").split(",") if part.strip()}))
