"""After routing picks a cluster: round robin over that cluster's healthy endpoints."""

from __future__ import annotations

from collections.abc import Iterable

from services.proxy.errors import NoHealthyUpstream
from shared.model.proxy_config import Cluster, Endpoint


class RoundRobin:
    """Cycles through the healthy endpoints of one cluster (one instance per config version)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster.name
        self._healthy = tuple(endpoint for endpoint in cluster.endpoints if endpoint.healthy)
        self._next = 0

    @property
    def healthy(self) -> tuple[Endpoint, ...]:
        return self._healthy

    def pick(self) -> Endpoint:
        if not self._healthy:
            raise NoHealthyUpstream(f"no healthy upstream in cluster {self.cluster!r}")
        endpoint = self._healthy[self._next % len(self._healthy)]
        self._next = (self._next + 1) % len(self._healthy)
        return endpoint


class Balancers:
    """One balancer per cluster of a config version."""

    def __init__(self, clusters: Iterable[Cluster]) -> None:
        self._by_cluster = {cluster.name: RoundRobin(cluster) for cluster in clusters}

    def pick(self, cluster: str) -> Endpoint:
        balancer = self._by_cluster.get(cluster)
        if balancer is None:
            raise NoHealthyUpstream(f"cluster {cluster!r} is not defined")
        return balancer.pick()
