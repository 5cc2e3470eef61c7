"""sourceLabels: a match block naming source labels routes only callers that carry them."""

from __future__ import annotations

from services.pilot.generate import generate
from services.pilot.testing import meshed, proxy_of, snapshot
from shared.model.proxy_config import ProxyConfig

TD = "cluster.local"
ROOT = "isthmus-system"

CATALOG = [
    meshed("frontend", "10.0.0.1", version="v1", app="frontend"),
    meshed("frontend", "10.0.0.2", version="canary", app="frontend"),
    meshed("reviews", "10.0.1.1", version="v1"),
    meshed("reviews", "10.0.1.2", version="v2"),
]

RULES = """
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
  - name: canary-callers
    match:
    - sourceLabels: {app: frontend, version: canary}
    - sourceLabels: {version: canary}
      headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - name: everyone
    route:
    - destination: {host: reviews, subset: v1}
"""


def reviews_routes(proxy_id: str) -> list[str | None]:
    snap = snapshot(CATALOG, RULES)
    config: ProxyConfig = generate(snap, proxy_of(snap, proxy_id), TD, ROOT)
    host = next(v for v in config.virtual_hosts if v.name == "reviews")
    return [route.name for route in host.routes]


def test_a_caller_without_the_labels_never_gets_the_route() -> None:
    assert reviews_routes("frontend-10.0.0.1") == ["everyone"]


def test_a_caller_with_the_labels_keeps_the_blocks_it_meets() -> None:
    snap = snapshot(CATALOG, RULES)
    config = generate(snap, proxy_of(snap, "frontend-10.0.0.2"), TD, ROOT)
    host = next(v for v in config.virtual_hosts if v.name == "reviews")
    assert [route.name for route in host.routes] == ["canary-callers", "everyone"]
    assert len(host.routes[0].match) == 2
