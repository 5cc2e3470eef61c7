"""Which endpoints callers reach over HTTP/2: ports declared `grpc` or `http2` (Meta `isthmus-protocol`, an extra
port, a ServiceEntry port), and only those."""

from __future__ import annotations

from services.pilot.generate import generate
from services.pilot.snapshot import Instance
from services.pilot.testing import meshed, proxy_of, snapshot
from shared.consul import META_EXTRA_PORTS, META_PROTOCOL
from shared.model.proxy_config import ProxyConfig

TD = "cluster.local"
ROOT = "isthmus-system"
CALLER = meshed("frontend", "10.0.0.1", namespace="shop")
GRPC = meshed("ratings", "10.0.1.1", namespace="shop", app_port=50051, **{META_PROTOCOL: "grpc"})
HTTP = meshed("ratings", "10.0.1.2", namespace="shop", app_port=50051)
# HTTP/1.1 on 9080 (registered port 15006), gRPC on 50051 (15009).
MIXED = meshed("reviews", "10.0.2.1", namespace="shop", app_port=9080, **{META_EXTRA_PORTS: "grpc:50051:15009"})

VS_GRPC_PORT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /reviews.Reviews/}}]
    route: [{destination: {host: reviews, port: {number: 50051}}}]
  - route: [{destination: {host: reviews}}]
"""

ENTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pricing, namespace: shop}
spec:
  hosts: [pricing.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {number: 443, name: grpc, protocol: GRPC}
  - {number: 80, name: http, protocol: HTTP}
  endpoints: [{address: 192.0.2.10}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pricing, namespace: shop}
spec:
  hosts: [pricing.example.com]
  http:
  - match: [{uri: {prefix: /legacy}}]
    route: [{destination: {host: pricing.example.com, port: {number: 80}}}]
  - route: [{destination: {host: pricing.example.com, port: {number: 443}}}]
"""


def _generate(catalog: list[Instance], config: str = "") -> ProxyConfig:
    snap = snapshot(catalog, config)
    return generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)


def _http2(config: ProxyConfig, cluster: str) -> dict[str, bool]:
    found = next(c for c in config.clusters if c.name == cluster)
    return {f"{e.address}:{e.port}": e.http2 for e in found.endpoints}


def test_each_instance_is_called_in_the_protocol_it_declares() -> None:
    config = _generate([CALLER, GRPC, HTTP])
    assert _http2(config, "outbound|80||ratings") == {"10.0.1.1:15006": True, "10.0.1.2:15006": False}


def test_a_grpc_extra_port_is_http2_and_the_registered_http_port_is_not() -> None:
    config = _generate([CALLER, MIXED], VS_GRPC_PORT)
    assert _http2(config, "outbound|80||reviews") == {"10.0.2.1:15006": False}
    assert _http2(config, "outbound|50051||reviews") == {"10.0.2.1:15009": True}


def test_service_entry_grpc_ports_are_http2() -> None:
    config = _generate([CALLER], ENTRY)
    assert _http2(config, "outbound|443||pricing.example.com") == {"192.0.2.10:443": True}
    assert _http2(config, "outbound|80||pricing.example.com") == {"192.0.2.10:80": False}
