"""Per-proxy scoping: a proxy that declares its upstreams gets only those services' hosts and clusters."""

from __future__ import annotations

from services.pilot.generate import generate
from services.pilot.snapshot import Instance
from services.pilot.testing import meshed, plain, proxy_of, snapshot
from shared.consul import META_UPSTREAMS

CANARY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: product, namespace: shop}
spec:
  hosts: [product]
  http:
  - route:
    - destination: {host: product, subset: v1}
      weight: 90
    - destination: {host: legacy.default}
      weight: 10
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: product, namespace: shop}
spec:
  host: product
  subsets: [{name: v1, labels: {version: v1}}]
"""


def caller(upstreams: str | None) -> Instance:
    instance = meshed("order", "10.0.0.1", namespace="shop", version="v1")
    meta = dict(instance.meta) | ({META_UPSTREAMS: upstreams} if upstreams is not None else {})
    return Instance(instance.service, instance.service_id, instance.node, instance.address, instance.port, meta)


def world(upstreams: str | None) -> list[Instance]:
    return [
        caller(upstreams),
        meshed("product", "10.0.0.2", namespace="shop", version="v1"),
        meshed("payment", "10.0.0.3", namespace="shop", version="v1"),
        plain("legacy", "10.0.0.4", 8080),
    ]


def hosts_and_clusters(upstreams: str | None) -> tuple[list[str], list[str]]:
    snap = snapshot(world(upstreams), CANARY)
    config = generate(snap, proxy_of(snap, "order-10.0.0.1"), "cluster.local", "isthmus-system")
    return [h.name for h in config.virtual_hosts], [c.name for c in config.clusters]


def test_no_declared_upstreams_means_every_service() -> None:
    hosts, clusters = hosts_and_clusters(None)
    assert hosts == ["legacy", "order", "payment", "product"]
    assert "outbound|80||payment" in clusters


def test_declared_upstreams_keep_their_hosts_and_every_cluster_their_routes_use() -> None:
    hosts, clusters = hosts_and_clusters(" Product.shop ,ghost")
    assert hosts == ["product"]
    # the canary sends 10 % to legacy: its cluster comes along although legacy is not an upstream
    assert sorted(clusters) == sorted(["outbound|80|v1|product", "outbound|80||legacy"])


def test_upstream_by_consul_domain_and_config_stays_deterministic() -> None:
    assert hosts_and_clusters("payment.service.consul")[0] == ["payment"]
    snap = snapshot(world("payment"), CANARY)
    proxy = proxy_of(snap, "order-10.0.0.1")
    first = generate(snap, proxy, "cluster.local", "isthmus-system").versioned()
    again = generate(snapshot(list(reversed(world("payment"))), CANARY), proxy, "cluster.local", "isthmus-system")
    assert first.to_json() == again.versioned().to_json()
