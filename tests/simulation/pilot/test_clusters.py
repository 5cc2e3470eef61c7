"""Cluster traffic policy from a DestinationRule: top level, port level and subset merged the way Istio does."""

from __future__ import annotations

from services.pilot.generate import generate
from services.pilot.testing import meshed, proxy_of, snapshot
from shared.model.destination_rule import TrafficPolicy

TD = "cluster.local"
ROOT = "isthmus-system"
CATALOG = [meshed("frontend", "10.0.0.1"), meshed("reviews", "10.0.1.1", version="v1")]

RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {maxConnections: 10}}
    outlierDetection: {consecutive5xxErrors: 3}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {consistentHash: {httpHeaderName: x-user}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {http: {http1MaxPendingRequests: 1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
      portLevelSettings:
      - port: {number: 80}
        outlierDetection: {consecutiveGatewayErrors: 2}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {x-port: {exact: "9080"}}}]
    route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]
  - match: [{headers: {x-subset: {exact: v2}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"""


def _policies() -> dict[str, TrafficPolicy | None]:
    snap = snapshot(CATALOG, RULE)
    config = generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)
    return {c.name: c.traffic_policy for c in config.clusters}


def test_top_level_and_subset_merge_component_by_component() -> None:
    v1 = _policies()["outbound|80|v1|reviews"]
    assert v1 is not None and v1.load_balancer is not None and v1.connection_pool is not None
    assert v1.load_balancer.simple == "ROUND_ROBIN"
    # The subset's connectionPool replaces the top-level one whole (Istio merges per component).
    assert v1.connection_pool.tcp is None
    assert v1.connection_pool.http is not None and v1.connection_pool.http.http1_max_pending_requests == 1
    assert v1.outlier_detection is not None and v1.outlier_detection.consecutive_5xx_errors == 3
    assert v1.port_level_settings == []


def test_top_level_port_settings_replace_every_component_for_that_port() -> None:
    v1_9080 = _policies()["outbound|9080|v1|reviews"]
    assert v1_9080 is not None and v1_9080.load_balancer is not None
    assert v1_9080.load_balancer.consistent_hash is not None
    # Port level does not inherit the top-level outlier detection; the subset's pool still applies.
    assert v1_9080.outlier_detection is None
    assert v1_9080.connection_pool is not None and v1_9080.connection_pool.http is not None


def test_subset_port_settings_replace_everything_for_their_port() -> None:
    v2 = _policies()["outbound|80|v2|reviews"]
    assert v2 is not None
    assert v2.load_balancer is None and v2.connection_pool is None
    assert v2.outlier_detection is not None and v2.outlier_detection.consecutive_gateway_errors == 2


def test_no_rule_no_policy() -> None:
    snap = snapshot(CATALOG, "")
    config = generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)
    assert all(c.traffic_policy is None for c in config.clusters)


def test_the_retry_budget_is_kept_through_port_level_entries_and_a_subset_may_set_its_own() -> None:
    rule = RULE.replace(
        "    outlierDetection: {consecutive5xxErrors: 3}\n",
        "    outlierDetection: {consecutive5xxErrors: 3}\n    retryBudget: {percent: 10}\n",
    ).replace(
        "      loadBalancer: {simple: RANDOM}\n",
        "      loadBalancer: {simple: RANDOM}\n      retryBudget: {percent: 50, minRetryConcurrency: 1}\n",
    )
    snap = snapshot(CATALOG, rule)
    config = generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)
    budgets = {
        c.name: (c.traffic_policy.retry_budget.percent, c.traffic_policy.retry_budget.min_retry_concurrency)
        for c in config.clusters
        if c.traffic_policy is not None and c.traffic_policy.retry_budget is not None
    }
    assert budgets == {
        "outbound|80||reviews": (10.0, 3),
        "outbound|80|v1|reviews": (10.0, 3),  # the top-level budget under the subset's own policy
        "outbound|9080|v1|reviews": (10.0, 3),  # and under the top-level port-level entry
        "outbound|80|v2|reviews": (50.0, 1),  # the subset's own, under its port-level entry
    }


def test_proxy_protocol_applies_to_every_port_and_subset_of_the_rule() -> None:
    rule = RULE.replace(
        "    outlierDetection: {consecutive5xxErrors: 3}\n",
        "    outlierDetection: {consecutive5xxErrors: 3}\n    proxyProtocol: {version: V2}\n",
    )
    snap = snapshot(CATALOG, rule)
    config = generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)
    versions = {
        c.name: c.traffic_policy.proxy_protocol.version
        for c in config.clusters
        if c.traffic_policy is not None and c.traffic_policy.proxy_protocol is not None
    }
    reviews = {c.name for c in config.clusters if c.name.endswith("|reviews")}
    assert set(versions) == reviews and len(reviews) == 4 and set(versions.values()) == {"V2"}
