"""Generation results carried across snapshots: through a run of changes, every proxy's config equals a fresh pass."""

from __future__ import annotations

from dataclasses import replace

from services.pilot.generate import generate
from services.pilot.reuse import Reuse
from services.pilot.snapshot import Instance, Snapshot
from services.pilot.testing import meshed, plain, resources
from shared.consul import META_UPSTREAMS

TD = "cluster.local"
ROOT = "isthmus-system"

_FRONT = meshed("frontend", "10.0.0.1", namespace="shop")
FRONTEND = replace(_FRONT, meta={**_FRONT.meta, META_UPSTREAMS: "reviews,details,ratings"})
EVERYTHING = meshed("admin", "10.0.0.2", namespace="shop")  # no upstreams declared: the whole catalog
REVIEWS_V1 = meshed("reviews", "10.0.1.1", namespace="shop", app="reviews", version="v1")
REVIEWS_V2 = meshed("reviews", "10.0.1.2", namespace="shop", app="reviews", version="v2")
RATINGS = plain("ratings", "10.0.2.1", 9080)
DETAILS = meshed("details", "10.0.3.1", namespace="shop", app="details")

RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: %s}}
---
"""
ROUTE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: details}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
---
"""
DISABLE = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: plain, namespace: shop}
spec: {mtls: {mode: DISABLE}}
---
"""

STATES: list[tuple[str, str, list[Instance]]] = [
    ("start", RULE % "v2" + ROUTE, [FRONTEND, EVERYTHING, REVIEWS_V1, RATINGS]),
    ("an instance joins", RULE % "v2" + ROUTE, [FRONTEND, EVERYTHING, REVIEWS_V1, REVIEWS_V2, RATINGS]),
    ("a subset's labels change", RULE % "v1" + ROUTE, [FRONTEND, EVERYTHING, REVIEWS_V1, REVIEWS_V2, RATINGS]),
    ("a PeerAuthentication turns mTLS off", RULE % "v1" + ROUTE + DISABLE, [FRONTEND, EVERYTHING, REVIEWS_V1, RATINGS]),
    # details was an unknown host until now: the route's destination resolves to the new catalog service.
    ("a routed-to service registers", RULE % "v1" + ROUTE + DISABLE, [FRONTEND, EVERYTHING, REVIEWS_V1, DETAILS]),
    (
        "an instance turns unhealthy",
        RULE % "v1" + ROUTE,
        [FRONTEND, EVERYTHING, replace(REVIEWS_V1, healthy=False), DETAILS],
    ),
    ("the VirtualService is deleted", RULE % "v1", [FRONTEND, EVERYTHING, REVIEWS_V1, DETAILS]),
]


def _configs(snap: Snapshot) -> dict[str, tuple[str, bytes]]:
    return {proxy.proxy_id: generate(snap, proxy, TD, ROOT).stamped() for proxy in snap.proxies}


def test_every_state_generates_what_a_fresh_pass_generates() -> None:
    reuse = Reuse()
    for what, config, catalog in STATES:
        instances = [replace(i) for i in catalog]  # equal, not identical: reuse must compare, not trust identity
        carried = Snapshot.build(resources(config), instances, reuse)
        fresh = Snapshot.build(resources(config), catalog)
        assert _configs(carried) == _configs(fresh), what
    assert reuse.hits > 0  # the run did reuse results; equality above is not a fresh pass twice
