"""DestinationRule trafficPolicy from config to endpoint choice: LB kinds, hash ring stability, ejections, breakers."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import pytest

from services.proxy.balancer import ClusterRuntime, ClusterRuntimes, Lease
from services.proxy.errors import NoHealthyUpstream, UpstreamOverflow
from services.proxy.lb import hash64
from shared.clock import FakeClock
from shared.model.proxy_config import Cluster


def _cluster(count: int, policy: dict[str, Any] | None = None, skip: int | None = None) -> Cluster:
    return Cluster.model_validate(
        {
            "name": "outbound|80|v1|reviews",
            "host": "reviews",
            "port": 80,
            "subset": "v1",
            "endpoints": [{"address": f"10.1.0.{i}", "port": 9080} for i in range(count) if i != skip],
            "trafficPolicy": policy,
        }
    )


def _runtime(cluster: Cluster, clock: FakeClock | None = None, seed: int = 7) -> ClusterRuntime:
    return ClusterRuntimes(clock or FakeClock(), random.Random(seed)).get(cluster)


@pytest.mark.parametrize("kind", ["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST"])
def test_simple_kinds_spread_evenly(kind: str) -> None:
    runtime = _runtime(_cluster(4, {"loadBalancer": {"simple": kind}}))
    n = 4000
    counts = Counter(runtime.pick().address for _ in range(n))
    assert len(counts) == 4
    sigma = math.sqrt(n * 0.25 * 0.75)
    assert all(abs(count - n / 4) <= 4 * sigma for count in counts.values()), counts


def test_least_request_steers_away_from_busy_endpoints() -> None:
    runtime = _runtime(_cluster(4, {"loadBalancer": {"simple": "LEAST_REQUEST"}}))
    held = [Lease.take(runtime, None, frozenset()) for _ in range(40)]
    # With requests held open, P2C keeps the in-flight counts close together.
    in_flight = Counter(lease.endpoint.address for lease in held)
    assert max(in_flight.values()) - min(in_flight.values()) <= 2, in_flight


@pytest.mark.parametrize(
    ("hash_policy", "request_key"),
    [
        ({"httpHeaderName": "x-user"}, lambda i: ({"x-user": f"u{i}"}, None, "")),
        ({"httpCookie": {"name": "sid", "ttl": "0s"}}, lambda i: ({"cookie": f"sid=s{i}"}, None, "")),
        ({"useSourceIp": True}, lambda i: ({}, f"192.168.0.{i % 250}", "")),
        ({"httpQueryParameterName": "u"}, lambda i: ({}, None, f"u={i}")),
    ],
)
def test_consistent_hash_is_sticky_per_key(hash_policy: dict[str, Any], request_key: Any) -> None:
    runtime = _runtime(_cluster(5, {"loadBalancer": {"consistentHash": hash_policy}}))
    for i in range(50):
        key = runtime.hash_key(*request_key(i))
        assert key is not None
        first = runtime.pick(key)
        assert all(runtime.pick(key) == first for _ in range(5))


def test_ring_moves_about_one_nth_of_keys_when_an_endpoint_leaves() -> None:
    n = 10
    policy = {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}
    before = _runtime(_cluster(n, policy))
    after = _runtime(_cluster(n, policy, skip=3))
    keys = [hash64(f"user-{i}") for i in range(5000)]
    owners_before = [before.pick(key).address for key in keys]
    owners_after = [after.pick(key).address for key in keys]
    moved = [b for b, a in zip(owners_before, owners_after, strict=True) if b != a]
    # Only the departed endpoint's keys move, and it held about 1/N of them.
    assert set(moved) == {"10.1.0.3"}
    assert 0.5 / n < len(moved) / len(keys) < 1.6 / n, len(moved)


def test_ring_key_survives_an_ejection_of_another_endpoint() -> None:
    policy = {
        "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}},
        "outlierDetection": {"consecutive5xxErrors": 1, "maxEjectionPercent": 100},
    }
    runtime = _runtime(_cluster(4, policy))
    key = hash64("alice")
    home = runtime.pick(key)
    other = next(e for e in runtime.config.endpoints if e != home)
    runtime.report(other, 503)
    assert runtime.pick(key) == home
    runtime.report(home, 503)
    assert runtime.pick(key) != home


async def test_ejected_host_gets_no_traffic_then_returns() -> None:
    clock = FakeClock(start=0.0)
    policy = {
        "loadBalancer": {"simple": "ROUND_ROBIN"},
        "outlierDetection": {"consecutive5xxErrors": 3, "interval": "1s", "baseEjectionTime": "15s"},
    }
    runtime = _runtime(_cluster(3, policy), clock)
    bad = runtime.config.endpoints[0]
    for _ in range(3):
        runtime.report(bad, 500)
    assert all(runtime.pick() != bad for _ in range(30))
    await clock.advance(14.5)
    assert all(runtime.pick() != bad for _ in range(30))
    await clock.advance(0.5)
    assert bad in [runtime.pick() for _ in range(30)]


def test_all_hosts_ejected_is_503_uh() -> None:
    policy = {"outlierDetection": {"consecutive5xxErrors": 1, "maxEjectionPercent": 100}}
    runtime = _runtime(_cluster(2, policy))
    for endpoint in runtime.config.endpoints:
        runtime.report(endpoint, 502)
    with pytest.raises(NoHealthyUpstream) as caught:
        runtime.pick()
    assert (caught.value.status, caught.value.flag) == (503, "UH")


def test_istio_circuit_breaker_example_overflows_the_third_concurrent_request() -> None:
    policy = {
        "connectionPool": {
            "tcp": {"maxConnections": 1},
            "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1},
        }
    }
    runtime = _runtime(_cluster(1, policy))
    leases = [Lease.take(runtime, None, frozenset()) for _ in range(2)]
    with pytest.raises(UpstreamOverflow) as caught:
        Lease.take(runtime, None, frozenset())
    assert (caught.value.status, caught.value.flag) == (503, "UO")
    leases[0].release()
    Lease.take(runtime, None, frozenset())
