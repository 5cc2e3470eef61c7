"""Cluster runtimes: picks over available endpoints, retries avoiding tried hosts, state kept across versions."""

from __future__ import annotations

import random
from typing import Any

import pytest

from services.proxy.balancer import Balancers, ClusterRuntimes, Lease
from services.proxy.errors import NoHealthyUpstream, UpstreamOverflow
from shared.clock import FakeClock
from shared.model.proxy_config import Cluster, Endpoint


def _cluster(*ports: int, unhealthy: tuple[int, ...] = (), policy: dict[str, Any] | None = None) -> Cluster:
    return Cluster.model_validate(
        {
            "name": "outbound|80||svc",
            "host": "svc",
            "port": 80,
            "endpoints": [Endpoint(address="10.0.0.1", port=p, healthy=p not in unhealthy) for p in ports],
            "trafficPolicy": policy,
        }
    )


ROUND_ROBIN = {"loadBalancer": {"simple": "ROUND_ROBIN"}}


def test_round_robin_cycles_through_endpoints_in_order() -> None:
    balancers = Balancers([_cluster(1, 2, 3, policy=ROUND_ROBIN)])
    assert [balancers.pick("outbound|80||svc").port for _ in range(7)] == [1, 2, 3, 1, 2, 3, 1]


def test_skips_unhealthy_endpoints() -> None:
    balancers = Balancers([_cluster(1, 2, 3, unhealthy=(2,))], rng=random.Random(1))
    assert {balancers.pick("outbound|80||svc").port for _ in range(50)} == {1, 3}


def test_no_healthy_endpoint_is_503_uh() -> None:
    with pytest.raises(NoHealthyUpstream) as caught:
        Balancers([_cluster(1, unhealthy=(1,))]).pick("outbound|80||svc")
    assert (caught.value.status, caught.value.flag) == (503, "UH")


def test_unknown_cluster_is_uh() -> None:
    with pytest.raises(NoHealthyUpstream, match="not defined"):
        Balancers([_cluster(1)]).pick("outbound|81||other")


def test_retry_prefers_an_endpoint_not_tried_yet() -> None:
    runtime = Balancers([_cluster(1, 2)], rng=random.Random(3)).runtime("outbound|80||svc")
    for _ in range(20):
        assert runtime.pick(None, {("10.0.0.1", 1)}).port == 2
    # Every endpoint tried: any available one is fine again.
    assert runtime.pick(None, {("10.0.0.1", 1), ("10.0.0.1", 2)}).port in {1, 2}


def test_lease_counts_and_releases_once() -> None:
    policy = {"connectionPool": {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}}
    runtime = Balancers([_cluster(1, policy=policy)]).runtime("outbound|80||svc")
    first = Lease.take(runtime, None, frozenset())
    second = Lease.take(runtime, None, frozenset())
    with pytest.raises(UpstreamOverflow):
        Lease.take(runtime, None, frozenset())
    assert runtime.active == {("10.0.0.1", 1): 2}
    first.release()
    first.release()
    assert runtime.breaker.active == 1
    second.release()
    assert runtime.breaker.active == 0 and runtime.active == {}


def test_no_healthy_host_does_not_hold_the_breaker() -> None:
    runtime = Balancers([_cluster(1, unhealthy=(1,))]).runtime("outbound|80||svc")
    with pytest.raises(NoHealthyUpstream):
        Lease.take(runtime, None, frozenset())
    assert runtime.breaker.active == 0


def test_state_survives_a_new_version_with_the_same_policy() -> None:
    policy = {"outlierDetection": {"consecutive5xxErrors": 1, "maxEjectionPercent": 100}}
    runtimes = ClusterRuntimes(FakeClock(), random.Random(1))
    runtime = runtimes.get(_cluster(1, 2, policy=policy))
    assert runtime.report(runtime.config.endpoints[0], 500)
    same = runtimes.get(_cluster(1, 2, 3, policy=policy))
    assert same is runtime
    assert {e.port for e in same.available()} == {2, 3}
    changed = runtimes.get(_cluster(1, 2, 3, policy={"outlierDetection": {"consecutive5xxErrors": 2}}))
    assert changed is not runtime
    assert {e.port for e in changed.available()} == {1, 2, 3}


def test_retain_forgets_clusters_no_longer_configured() -> None:
    runtimes = ClusterRuntimes(FakeClock(), random.Random(1))
    first = runtimes.get(_cluster(1))
    runtimes.retain([])
    assert runtimes.get(_cluster(1)) is not first


def test_describe_reports_live_state() -> None:
    policy = {"outlierDetection": {"consecutive5xxErrors": 1}, "connectionPool": {"tcp": {"maxConnections": 1}}}
    runtimes = ClusterRuntimes(FakeClock(), random.Random(1))
    runtime = runtimes.get(_cluster(1, 2, policy=policy))
    runtime.report(runtime.config.endpoints[1], 503)
    leases = [Lease.take(runtime, None, frozenset()) for _ in range(2)]
    assert runtimes.describe() == {
        "outbound|80||svc": {"active": 2, "pending": 1, "retries": 0, "ejected": ["10.0.0.1:2"]}
    }
    for lease in leases:
        lease.release()
