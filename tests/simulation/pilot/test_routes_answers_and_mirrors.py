"""Pilot passes redirects, direct responses and CORS through, and resolves mirror destinations to clusters."""

from __future__ import annotations

from services.pilot.generate import generate
from services.pilot.testing import meshed, proxy_of, snapshot

CATALOG = [
    meshed("frontend", "10.0.0.1"),
    meshed("reviews", "10.0.1.1", version="v1"),
    meshed("reviews", "10.0.1.2", version="v2"),
]
CONFIG = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, redirectCode: 302}
  - match: [{uri: {prefix: /maintenance}}]
    directResponse: {status: 503, body: {string: back soon}}
  - route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 25}
    corsPolicy: {allowOrigins: [{exact: "https://shop"}]}
"""


def test_route_features_reach_the_proxy_config() -> None:
    snap = snapshot(CATALOG, CONFIG)
    config = generate(snap, proxy_of(snap, "frontend-10.0.0.1"), "cluster.local", "isthmus-system")
    routes = next(v for v in config.virtual_hosts if v.name == "reviews").routes
    assert routes[0].redirect is not None and routes[0].route == []
    assert routes[1].direct_response is not None and routes[1].direct_response.status == 503
    [mirror] = routes[2].mirrors
    assert mirror.cluster == "outbound|80|v2|reviews"
    assert mirror.percentage is not None and mirror.percentage.value == 25
    assert routes[2].cors_policy is not None
    clusters = {c.name: c for c in config.clusters}
    assert [e.address for e in clusters["outbound|80|v2|reviews"].endpoints] == ["10.0.1.2"]
