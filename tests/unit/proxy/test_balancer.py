"""Round robin over healthy endpoints, per cluster."""

from __future__ import annotations

import pytest

from services.proxy.balancer import Balancers, RoundRobin
from services.proxy.errors import NoHealthyUpstream
from shared.model.proxy_config import Cluster, Endpoint


def _cluster(*ports: int, unhealthy: tuple[int, ...] = ()) -> Cluster:
    return Cluster(
        name="outbound|80||svc",
        host="svc",
        port=80,
        endpoints=[Endpoint(address="10.0.0.1", port=p, healthy=p not in unhealthy) for p in ports],
    )


def test_cycles_through_endpoints_in_order() -> None:
    balancer = RoundRobin(_cluster(1, 2, 3))
    assert [balancer.pick().port for _ in range(7)] == [1, 2, 3, 1, 2, 3, 1]


def test_skips_unhealthy_endpoints() -> None:
    balancer = RoundRobin(_cluster(1, 2, 3, unhealthy=(2,)))
    assert {balancer.pick().port for _ in range(10)} == {1, 3}


def test_no_healthy_endpoint_is_503_uh() -> None:
    balancer = RoundRobin(_cluster(1, unhealthy=(1,)))
    with pytest.raises(NoHealthyUpstream) as caught:
        balancer.pick()
    assert (caught.value.status, caught.value.flag) == (503, "UH")


def test_unknown_cluster_is_uh() -> None:
    with pytest.raises(NoHealthyUpstream, match="not defined"):
        Balancers([_cluster(1)]).pick("outbound|81||other")
