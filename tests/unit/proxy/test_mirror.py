"""Mirroring: shadow host naming, percentage draws and the in-flight bound (no sockets: targets never exist)."""

from __future__ import annotations

import math
import random

from multidict import CIMultiDict

from services.proxy.balancer import ClusterRuntimes
from services.proxy.mirror import Mirrors, chosen, shadow_host
from services.proxy.tls import TlsContexts
from services.proxy.upstream import UpstreamPools
from shared.clock import FakeClock
from shared.model.base import Percent
from shared.model.proxy_config import Cluster, Endpoint, MirrorCluster


def test_shadow_host_keeps_the_port() -> None:
    assert shadow_host("reviews") == "reviews-shadow"
    assert shadow_host("reviews:9080") == "reviews-shadow:9080"
    assert shadow_host("[::1]:80") == "[::1]-shadow:80"


def test_percentage_draws_and_default_all() -> None:
    rng = random.Random(4)
    always = MirrorCluster(cluster="a")
    tenth = MirrorCluster(cluster="b", percentage=Percent(value=10))
    n = 2000
    hits = sum(tenth in chosen([always, tenth], rng) for _ in range(n))
    assert abs(hits - 200) <= 4 * math.sqrt(n * 0.1 * 0.9)
    assert all(always in chosen([always], rng) for _ in range(50))


async def test_in_flight_bound_and_no_healthy_host_drop() -> None:
    pools = UpstreamPools(TlsContexts())
    mirrors = Mirrors(pools, max_in_flight=2)
    runtimes = ClusterRuntimes(FakeClock(), random.Random(1))
    # A blackhole-free target: a port nothing listens on; the copies fail later, in their tasks.
    live = Cluster(name="m", host="m", port=80, endpoints=[Endpoint(address="127.0.0.1", port=9)])
    dead = Cluster(name="d", host="d", port=80, endpoints=[Endpoint(address="127.0.0.1", port=9, healthy=False)])
    by_name = {"m": live, "d": dead}
    headers = CIMultiDict({"Host": "m"})
    targets = [MirrorCluster(cluster="m")] * 3 + [MirrorCluster(cluster="d")]
    mirrors.send(lambda name: runtimes.get(by_name[name]), targets, "GET", "/", headers, None, 1.0)
    assert mirrors.in_flight == 2
    assert mirrors.dropped == 2
    assert headers["Host"] == "m"  # the real request's headers are untouched
    await mirrors.close()
    await pools.close()
    assert runtimes.get(live).breaker.active == 0
