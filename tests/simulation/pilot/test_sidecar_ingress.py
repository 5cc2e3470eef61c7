"""Sidecar ingress: which workload ports get a default endpoint and which connection pool, for which proxies."""

from __future__ import annotations

from services.pilot.generate import generate
from services.pilot.testing import meshed, proxy_of, snapshot
from shared.model.proxy_config import InboundConfig

ROOT = "isthmus-system"
CATALOG = [
    meshed("reviews", "10.0.1.1", namespace="shop", version="v1", app="reviews"),
    meshed("orders", "10.0.3.1", namespace="shop", app="orders"),
    meshed("stock", "10.0.5.1", namespace="stock", app="stock"),
]

SELECTED = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews-ingress, namespace: shop}
spec:
  workloadSelector: {labels: {app: reviews}}
  inboundConnectionPool:
    tcp: {maxConnections: 50, connectTimeout: 2s}
  ingress:
  - port: {number: 9443, protocol: HTTP, name: admin}
    defaultEndpoint: "[::]:9444"
  - port: {number: 9080, protocol: HTTP, name: web}
    defaultEndpoint: 127.0.0.1:8080
    connectionPool:
      http: {http1MaxPendingRequests: 5}
"""

NAMESPACE_WIDE = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  inboundConnectionPool:
    http: {http2MaxRequests: 100}
"""


def inbound_of(proxy_id: str, *resources: str) -> InboundConfig:
    snap = snapshot(CATALOG, "---".join(resources))
    return generate(snap, proxy_of(snap, proxy_id), "cluster.local", ROOT).inbound


def test_the_selected_workload_gets_its_listeners_in_port_order_with_their_pools() -> None:
    inbound = inbound_of("reviews-10.0.1.1", SELECTED, NAMESPACE_WIDE)
    assert [(entry.port, entry.default_endpoint) for entry in inbound.app_ports] == [
        (9080, "127.0.0.1:8080"),
        (9443, "[::]:9444"),
    ]
    web, admin = inbound.app_ports
    # A listener's own pool replaces the Sidecar's; a listener without one takes the Sidecar's.
    assert web.connection_pool is not None and web.connection_pool.tcp is None
    assert web.connection_pool.http is not None and web.connection_pool.http.http1_max_pending_requests == 5
    assert admin.connection_pool == inbound.connection_pool
    assert inbound.connection_pool is not None and inbound.connection_pool.tcp is not None
    assert inbound.connection_pool.tcp.max_connections == 50
    # A port without a listener: its own address, the Sidecar's pool.
    other = inbound.app_port(7000)
    assert (other.default_endpoint, other.connection_pool) == (None, inbound.connection_pool)


def test_other_workloads_of_the_namespace_get_the_namespace_sidecar() -> None:
    inbound = inbound_of("orders-10.0.3.1", SELECTED, NAMESPACE_WIDE)
    assert inbound.app_ports == []
    assert inbound.connection_pool is not None and inbound.connection_pool.http is not None
    assert inbound.connection_pool.http.http2_max_requests == 100


def test_without_a_sidecar_nothing_changes_how_the_app_is_called() -> None:
    inbound = inbound_of("stock-10.0.5.1", SELECTED, NAMESPACE_WIDE)
    assert inbound.app_ports == [] and inbound.connection_pool is None
    assert inbound.app_port(8080).default_endpoint is None
