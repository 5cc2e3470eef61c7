"""TCP routes from config to decision: listeners per declared `name:port`, route choice by port, weights, subsets."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.pilot.generate import generate
from services.pilot.snapshot import Instance
from services.pilot.testing import meshed, plain, proxy_of, snapshot
from services.proxy.errors import NoRoute
from services.proxy.tcp_routes import decide
from shared.consul import META_PROTOCOL, META_UPSTREAMS, TcpUpstream
from shared.model.proxy_config import ProxyConfig

TD = "cluster.local"
ROOT = "isthmus-system"
TCP = {META_PROTOCOL: "tcp"}


def _catalog(caller_upstreams: str, **caller_labels: str) -> list[Instance]:
    labels = {"app": "billing", **caller_labels, META_UPSTREAMS: caller_upstreams}
    return [
        meshed("billing", "10.0.0.1", **labels),
        meshed("db", "10.0.1.1", version="primary", **TCP),
        meshed("db", "10.0.1.2", version="replica", **TCP),
        meshed("web", "10.0.2.1", version="v1"),
        plain("legacy-cache", "10.0.3.1", 6379),
    ]


RULES = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7, connectTimeout: 2s}}}
  subsets:
  - {name: primary, labels: {version: primary}}
  - {name: replica, labels: {version: replica}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5433}]
    route:
    - destination: {host: db, subset: replica}
  - match: [{port: 5432, sourceLabels: {app: reporting}}]
    route:
    - destination: {host: db, subset: replica}
  - match: [{port: 5432}]
    route:
    - destination: {host: db, subset: primary}
      weight: 80
    - destination: {host: db, subset: replica}
      weight: 20
"""


def _config(upstreams: str, rules: str = RULES, **labels: str) -> ProxyConfig:
    snap = snapshot(_catalog(upstreams, **labels), rules)
    return generate(snap, proxy_of(snap, "billing-10.0.0.1"), TD, ROOT)


def test_a_declared_tcp_upstream_gets_a_listener_with_the_routes_of_its_port() -> None:
    config = _config("db:5432,db:5433:15433,web")
    assert [(t.name, t.service, t.port) for t in config.tcp_listeners] == [
        ("db:5432", "db", 5432),
        ("db:5433", "db", 5433),
    ]
    on_5432 = config.tcp_listeners[0]
    # The 5433-only route is gone; the reporting-only block is gone for a caller without that label.
    assert [[w.cluster for w in r.route] for r in on_5432.routes] == [
        ["outbound|5432|primary|db", "outbound|5432|replica|db"]
    ]
    names = {cluster.name for cluster in config.clusters}
    assert {"outbound|5432|primary|db", "outbound|5432|replica|db", "outbound|5433|replica|db"} <= names
    primary = next(c for c in config.clusters if c.name == "outbound|5432|primary|db")
    assert [e.address for e in primary.endpoints] == ["10.0.1.1"]
    assert primary.endpoints[0].identity == "spiffe://cluster.local/ns/default/sa/db"
    assert primary.traffic_policy is not None and primary.traffic_policy.connection_pool is not None


def test_port_decides_the_route_and_weights_split_connections() -> None:
    config = _config("db:5432,db:5433")
    rng = random.Random(3)
    picks = Counter(decide(config, TcpUpstream("db", 5432, 5432), rng).cluster for _ in range(5000))
    assert set(picks) == {"outbound|5432|primary|db", "outbound|5432|replica|db"}
    assert 0.77 <= picks["outbound|5432|primary|db"] / 5000 <= 0.83
    other = {decide(config, TcpUpstream("db", 5433, 0), rng).cluster for _ in range(50)}
    assert other == {"outbound|5433|replica|db"}


def test_source_labels_choose_a_route_per_caller() -> None:
    config = _config("db:5432", app="reporting")
    assert {decide(config, TcpUpstream("db", 5432, 5432), random.Random(1)).cluster for _ in range(50)} == {
        "outbound|5432|replica|db"
    }


def test_without_tcp_routes_a_listener_goes_to_the_service_port() -> None:
    config = _config("db:9000", rules="")
    (listener,) = config.tcp_listeners
    assert decide(config, TcpUpstream("db", 9000, 9000), random.Random(1)).cluster == "outbound|9000||db"
    assert listener.routes[0].match == []


def test_http_services_and_undeclared_ports_get_no_listener() -> None:
    config = _config("web:8080,legacy-cache:6379,nowhere:1")
    assert config.tcp_listeners == []
    with pytest.raises(NoRoute):
        decide(config, TcpUpstream("web", 8080, 8080), random.Random(1))
    assert [v.name for v in config.virtual_hosts] == ["legacy-cache", "web"]


def test_a_plain_tcp_service_is_reached_without_identity() -> None:
    snap = snapshot(
        [
            meshed("billing", "10.0.0.1", **{META_UPSTREAMS: "cache:6379"}),
            Instance(service="cache", service_id="cache-1", node="n1", address="10.0.3.1", port=6379, meta=TCP),
        ]
    )
    config = generate(snap, proxy_of(snap, "billing-10.0.0.1"), TD, ROOT)
    (cluster,) = [c for c in config.clusters if c.name == "outbound|6379||cache"]
    assert [(e.address, e.port, e.identity) for e in cluster.endpoints] == [("10.0.3.1", 6379, None)]
