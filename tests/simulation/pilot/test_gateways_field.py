"""VirtualService `gateways`: empty or naming `mesh` shapes sidecars' traffic; gateway names alone do not."""

from __future__ import annotations

from services.pilot.generate import generate
from services.pilot.testing import meshed, proxy_of, snapshot
from shared.model.proxy_config import ProxyConfig

TD = "cluster.local"
ROOT = "isthmus-system"
CATALOG = [meshed("frontend", "10.0.0.1"), meshed("reviews", "10.0.1.1", version="v2")]
RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v2, labels: {version: v2}}]
"""


def only_v2(gateways: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  {gateways}
  http:
  - route:
    - destination: {{host: reviews, subset: v2}}
---
{RULE}"""


def reviews_clusters(config: str) -> list[str]:
    snap = snapshot(CATALOG, config)
    generated: ProxyConfig = generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)
    host = next(h for h in generated.virtual_hosts if h.name == "reviews")
    return [weighted.cluster for route in host.routes for weighted in route.route]


def test_no_gateways_means_the_mesh() -> None:
    assert reviews_clusters(only_v2("")) == ["outbound|80|v2|reviews"]


def test_naming_mesh_applies_to_sidecars() -> None:
    assert reviews_clusters(only_v2("gateways: [mesh, shop/ingress]")) == ["outbound|80|v2|reviews"]


def test_gateway_names_alone_leave_sidecars_on_the_default_route() -> None:
    assert reviews_clusters(only_v2("gateways: [shop/ingress]")) == ["outbound|80||reviews"]
