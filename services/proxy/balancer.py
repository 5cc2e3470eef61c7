"""After routing picks a cluster: its runtime state (load balancer, circuit breaker, outlier detector) and the pick.

The config of a cluster comes with each snapshot; its runtime state (round-robin position, requests in
flight, ejections, breaker counts) lives here across config versions, so a new version that leaves a
cluster's policy alone keeps its ejections and counts. A changed traffic policy starts the cluster afresh;
changed endpoints keep the state of endpoints that stay. Without outlierDetection, endpoints that are
not healthy (Consul's checks) are never picked; with it, see outlier.py for ejections and panic. A cluster
with TLS origination files has an OriginationWatch (origination.py): once its check interval has passed, the
next lookup stats the files and, when one changed, swaps in a PoolSettings with the new Origination (new
pools; the old ones drain). A cluster whose files never loaded is also built afresh by a new config version.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field

from services.proxy.circuit_breaker import CircuitBreaker, Limits
from services.proxy.errors import NoHealthyUpstream
from services.proxy.lb import EndpointKey, HashKeySource, Picker, SlowStart, endpoint_key, is_weighted, picker_for
from services.proxy.locality import LocalityBalancer
from services.proxy.origination import Origination, OriginationWatch
from services.proxy.outlier import OutlierDetector
from services.proxy.upstream import PoolSettings
from shared.clock import SYSTEM_CLOCK, Clock
from shared.model.destination_rule import TrafficPolicy
from shared.model.proxy_config import Cluster, Endpoint


@dataclass(eq=False)
class ClusterRuntime:
    """One cluster's live state; built from its Cluster config, rebound when only the endpoints change."""

    config: Cluster
    picker: Picker
    breaker: CircuitBreaker
    outlier: OutlierDetector | None
    pool: PoolSettings
    hash_source: HashKeySource | None
    rng: random.Random
    active: dict[EndpointKey, int] = field(default_factory=dict)
    keys: tuple[EndpointKey, ...] = ()
    locality: LocalityBalancer | None = None
    own_locality: str | None = None
    own_labels: Mapping[str, str] = field(default_factory=dict)
    origination_watch: OriginationWatch | None = None
    """Set when the cluster originates TLS from files; None: nothing to check, ever."""
    slow_start: SlowStart | None = None
    """The load balancer's `warmup`, when it has one that applies."""
    _healthy: list[Endpoint] = field(default_factory=list)
    _healthy_of: object = None

    @classmethod
    def build(
        cls,
        cluster: Cluster,
        clock: Clock,
        rng: random.Random,
        locality: str | None = None,
        labels: Mapping[str, str] | None = None,
        reload_interval: float | None = None,
    ) -> ClusterRuntime:
        """`locality`: this sidecar's own `region/zone/subzone` (None: locality failover and distribute are
        off); `labels`: its own labels, which failoverPriority compares with the endpoints';
        `reload_interval`: seconds between checks of TLS origination files (None: origination's default)."""
        policy = cluster.traffic_policy or TrafficPolicy()
        origination = Origination.of(cluster)
        runtime = cls(
            config=cluster,
            picker=picker_for(policy.load_balancer, cluster.endpoints, rng),
            breaker=CircuitBreaker(cluster.name, Limits.of(policy.connection_pool, policy.retry_budget)),
            outlier=OutlierDetector(policy.outlier_detection, clock) if policy.outlier_detection else None,
            pool=PoolSettings.of(cluster.name, policy.connection_pool, origination),
            hash_source=HashKeySource.of(policy.load_balancer),
            rng=rng,
        )
        runtime.keys = tuple(endpoint_key(e) for e in cluster.endpoints)
        runtime.own_locality = locality
        runtime.own_labels = labels or {}
        runtime.locality = _locality_balancer(locality, labels or {}, policy, cluster, rng)
        if origination is not None and origination.files:
            runtime.origination_watch = OriginationWatch(cluster, origination, clock, reload_interval)
        warmup = policy.load_balancer.slow_start() if policy.load_balancer is not None else None
        if warmup is not None:
            runtime.slow_start = SlowStart(warmup, clock)
        return runtime

    def check_origination(self) -> None:
        """The watch's interval has passed: check the files, and carry a changed Origination in a new
        PoolSettings (compared by identity, so the pools keyed by the old one are retired and drain)."""
        watch = self.origination_watch
        assert watch is not None, "only a cluster with origination files is checked"
        origination = watch.check()
        if origination is not self.pool.origination:
            self.pool = dataclasses.replace(self.pool, origination=origination)

    def rebind(self, cluster: Cluster) -> None:
        """Same policy, new endpoints: keep breaker, ejections and counts of the endpoints that stay."""
        self.config = cluster
        before = set(self.keys)
        self.keys = tuple(endpoint_key(e) for e in cluster.endpoints)
        if self.slow_start is not None:
            self.slow_start.keep_only(set(self.keys))
            self.slow_start.joined([key for key in self.keys if key not in before])
        policy = cluster.traffic_policy or TrafficPolicy()
        if self.hash_source or is_weighted(cluster.endpoints) or getattr(self.picker, "weighted", False):
            self.picker = picker_for(policy.load_balancer, cluster.endpoints, self.rng)
        self.locality = _locality_balancer(self.own_locality, self.own_labels, policy, cluster, self.rng)
        if self.outlier is not None:
            self.outlier.forget_except(set(self.keys))

    @property
    def name(self) -> str:
        return self.config.name

    def hash_key(self, headers: Mapping[str, str], remote: str | None, query: str) -> int | None:
        if self.hash_source is None:
            return None
        return self.hash_source.key(headers, remote, query)

    def affinity(self, headers: Mapping[str, str], remote: str | None, query: str) -> tuple[int | None, str | None]:
        """The request's hash key, and a Set-Cookie value when an affinity cookie had to be generated."""
        if self.hash_source is None:
            return None, None
        key = self.hash_source.key(headers, remote, query)
        if key is None:
            generated = self.hash_source.new_cookie(self.rng)
            if generated is not None:
                return generated
        return key, None

    def available(self) -> list[Endpoint]:
        if self.outlier is not None:
            return self.outlier.available(self.config.endpoints)
        endpoints = self.config.endpoints
        if self._healthy_of is not endpoints:  # computed once per endpoint list, not per request
            self._healthy = [e for e in endpoints if e.healthy]
            self._healthy_of = endpoints
        return self._healthy

    def pick(
        self,
        hash_key: int | None = None,
        exclude: Set[EndpointKey] = frozenset(),
        tried_localities: Set[EndpointKey] = frozenset(),
    ) -> Endpoint:
        """An available endpoint; on a retry, one not in `exclude` when there is one (Istio's previous_hosts),
        and with `tried_localities` (retryRemoteLocalities) from a locality group none of those is in while
        another group has endpoints (Envoy's previous_priorities)."""
        endpoints = self.config.endpoints
        if self.outlier is None and self._healthy_of is endpoints:  # available(), inline: once per request
            available = self._healthy
        else:
            available = self.available()
        if not available:
            raise NoHealthyUpstream(f"no healthy upstream in cluster {self.name!r}")
        if self.locality is not None:
            available = self.locality.narrow(available, tried_localities)
        if exclude:
            fresh = [e for e in available if endpoint_key(e) not in exclude]
            available = fresh or available
        if self.slow_start is not None and self.slow_start.warming():
            return self.slow_start.pick(available, self.rng)
        return self.picker.pick(available, hash_key, self.active)

    def started(self, endpoint: Endpoint) -> EndpointKey:
        """Count a request on `endpoint`; returns its key, for `finished`."""
        key = (endpoint.address, endpoint.port)  # lb.endpoint_key, inline
        self.active[key] = self.active.get(key, 0) + 1
        return key

    def finished(self, key: EndpointKey) -> None:
        left = self.active.get(key, 0) - 1
        if left > 0:
            self.active[key] = left
        else:
            self.active.pop(key, None)

    def report(self, endpoint: Endpoint, status: int | None) -> bool:
        """Feed one outcome to outlier detection (`status` None: connect failure or timeout); True if ejected."""
        if self.outlier is None:
            return False
        return self.outlier.report(endpoint, status, self.keys)


def _locality_balancer(
    own: str | None, labels: Mapping[str, str], policy: TrafficPolicy, cluster: Cluster, rng: random.Random
) -> LocalityBalancer | None:
    setting = policy.load_balancer.locality_lb_setting if policy.load_balancer is not None else None
    has_outlier_detection = policy.outlier_detection is not None
    return LocalityBalancer.build(own, setting, has_outlier_detection, cluster.endpoints, rng, labels)


@dataclass(eq=False, slots=True)
class Lease:
    """One attempt's hold on its cluster's breaker and its endpoint's request count, until released."""

    runtime: ClusterRuntime
    endpoint: Endpoint
    key: EndpointKey
    released: bool = False

    @classmethod
    def take(
        cls,
        runtime: ClusterRuntime,
        hash_key: int | None,
        exclude: Set[EndpointKey],
        tried_localities: Set[EndpointKey] = frozenset(),
    ) -> Lease:
        """Admit through the breaker (UpstreamOverflow), pick an endpoint (NoHealthyUpstream), count it."""
        runtime.breaker.admit()
        try:
            endpoint = runtime.pick(hash_key, exclude, tried_localities)
        except BaseException:
            runtime.breaker.release()
            raise
        return cls(runtime, endpoint, runtime.started(endpoint))

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.runtime.finished(self.key)
            self.runtime.breaker.release()


class ClusterRuntimes:
    """The runtime of every cluster, looked up per request with the snapshot's Cluster config."""

    def __init__(
        self,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        locality: str | None = None,
        labels: Mapping[str, str] | None = None,
        reload_interval: float | None = None,
    ) -> None:
        """`locality` and `labels`: this sidecar's own, for locality-aware balancing (locality.py);
        `reload_interval`: seconds between checks of TLS origination files (None: origination's default)."""
        self._clock = clock
        self._rng = rng or random.Random()
        self._locality = locality
        self._labels = dict(labels or {})
        self._reload_interval = reload_interval
        self._by_name: dict[str, ClusterRuntime] = {}

    def get(self, cluster: Cluster) -> ClusterRuntime:
        """The cluster's runtime, per request: its origination files are checked here once their interval passed."""
        runtime = self._by_name.get(cluster.name)
        if runtime is None or runtime.config is not cluster:
            runtime = self._follow(runtime, cluster)
        watch = runtime.origination_watch
        if watch is not None and self._clock.monotonic() >= watch.due:
            runtime.check_origination()
        return runtime

    def _follow(self, runtime: ClusterRuntime | None, cluster: Cluster) -> ClusterRuntime:
        """A new config version of the cluster: keep the runtime when the policy stayed and works, else build."""
        if runtime is not None and runtime.config.traffic_policy == cluster.traffic_policy and runtime.pool.usable:
            if runtime.config.endpoints != cluster.endpoints:
                runtime.rebind(cluster)
            else:
                runtime.config = cluster
            return runtime
        runtime = ClusterRuntime.build(
            cluster, self._clock, self._rng, self._locality, self._labels, self._reload_interval
        )
        self._by_name[cluster.name] = runtime
        return runtime

    def describe(self) -> dict[str, dict[str, object]]:
        """Live state per cluster for the admin port: requests in flight, pending, retries, ejected endpoints."""
        described: dict[str, dict[str, object]] = {}
        for name, runtime in sorted(self._by_name.items()):
            outlier = runtime.outlier
            ejected = [
                f"{address}:{port}" for address, port in runtime.keys if outlier and outlier.is_ejected((address, port))
            ]
            described[name] = {
                "active": runtime.breaker.active,
                "pending": runtime.breaker.pending,
                "retries": runtime.breaker.retries,
                "ejected": ejected,
            }
        return described

    def retain(self, names: Iterable[str]) -> None:
        """Forget clusters no longer configured."""
        keep = set(names)
        for name in [name for name in self._by_name if name not in keep]:
            del self._by_name[name]


class Balancers:
    """Picks for the clusters of one config version (a fixed set of runtimes, for tests and tools)."""

    def __init__(
        self,
        clusters: Iterable[Cluster],
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        locality: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._runtimes = ClusterRuntimes(clock, rng, locality, labels)
        self._clusters = {cluster.name: cluster for cluster in clusters}

    def runtime(self, cluster: str) -> ClusterRuntime:
        config = self._clusters.get(cluster)
        if config is None:
            raise NoHealthyUpstream(f"cluster {cluster!r} is not defined")
        return self._runtimes.get(config)

    def pick(self, cluster: str, hash_key: int | None = None) -> Endpoint:
        return self.runtime(cluster).pick(hash_key)
