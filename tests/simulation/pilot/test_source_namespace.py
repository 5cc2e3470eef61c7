"""sourceNamespace: a match block naming a namespace routes only callers whose sidecar runs in it, HTTP and TCP."""

from __future__ import annotations

import random

from services.pilot.generate import generate
from services.pilot.testing import meshed, proxy_of, snapshot
from services.proxy.tcp_routes import decide
from shared.consul import META_PROTOCOL, META_UPSTREAMS, TcpUpstream
from shared.model.proxy_config import ProxyConfig

TD = "cluster.local"
ROOT = "isthmus-system"

CATALOG = [
    meshed("frontend", "10.0.0.1", namespace="shop", **{META_UPSTREAMS: "db:5432,reviews:80"}),
    meshed("frontend", "10.0.0.2", namespace="staging", **{META_UPSTREAMS: "db:5432,reviews:80"}),
    meshed("reviews", "10.0.1.1", namespace="shop", version="v1"),
    meshed("reviews", "10.0.1.2", namespace="shop", version="v2"),
    meshed("db", "10.0.2.1", namespace="shop", version="primary", **{META_PROTOCOL: "tcp"}),
    meshed("db", "10.0.2.2", namespace="shop", version="replica", **{META_PROTOCOL: "tcp"}),
]

RULES = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - name: staging-callers
    match:
    - sourceNamespace: staging
    route:
    - destination: {host: reviews, subset: v2}
  - name: everyone
    route:
    - destination: {host: reviews, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec:
  host: db
  subsets:
  - {name: primary, labels: {version: primary}}
  - {name: replica, labels: {version: replica}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: shop}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5432, sourceNamespace: staging}]
    route:
    - destination: {host: db, subset: replica}
  - route:
    - destination: {host: db, subset: primary}
"""


def config_of(proxy_id: str) -> ProxyConfig:
    snap = snapshot(CATALOG, RULES)
    return generate(snap, proxy_of(snap, proxy_id), TD, ROOT)


def reviews_routes(config: ProxyConfig) -> list[str | None]:
    host = next(v for v in config.virtual_hosts if v.name == "reviews")
    return [route.name for route in host.routes]


def test_a_caller_in_the_namespace_gets_the_route() -> None:
    assert reviews_routes(config_of("frontend-10.0.0.2")) == ["staging-callers", "everyone"]


def test_a_caller_in_another_namespace_never_does() -> None:
    assert reviews_routes(config_of("frontend-10.0.0.1")) == ["everyone"]


def test_tcp_routes_choose_by_the_callers_namespace_too() -> None:
    upstream = TcpUpstream("db", 5432, 5432)
    staging = decide(config_of("frontend-10.0.0.2"), upstream, random.Random(1)).cluster
    shop = decide(config_of("frontend-10.0.0.1"), upstream, random.Random(1)).cluster
    assert (staging, shop) == ("outbound|5432|replica|db", "outbound|5432|primary|db")
