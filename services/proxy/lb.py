"""Endpoint choice inside one cluster, after routing: ROUND_ROBIN, LEAST_REQUEST, RANDOM and a consistent-hash ring.

Each picker chooses among the endpoints available right now (healthy and not ejected, see outlier.py).
Semantics follow Envoy as Istio configures it:
- no `loadBalancer` (or `simple: UNSPECIFIED`) means LEAST_REQUEST, Istio's default since 1.14;
- LEAST_REQUEST is "power of two choices": two random distinct endpoints, the one with fewer active requests;
- LEAST_CONN is Istio's deprecated alias of LEAST_REQUEST; PASSTHROUGH has no meaning without an original
  destination here and is treated as ROUND_ROBIN;
- consistentHash builds a ring (Ketama style) over every endpoint of the cluster: at least
  `minimumRingSize` points in total (default 1024), each endpoint's share rounded up to a power of two so
  that it stays the same while the endpoint count changes a little. A request's key hashes to a point and
  takes the first available endpoint clockwise, so when one of N endpoints leaves only the keys it owned
  (about 1/N) move. A request without
  the key (header or query parameter missing) is balanced randomly, as Envoy does without a hash. A
  request without the `httpCookie` gets one generated when the cookie has a `ttl` (0s: a session cookie),
  returned in Set-Cookie (with `path`, Max-Age and HttpOnly) on its response, as Envoy does; without a
  `ttl` it is balanced randomly. `ringHash.minimumRingSize` (or the older `minimumRingSize`) sizes the
  ring; `maglev` is served by the same ring, its `tableSize` as the ring size.
- endpoint weights (ServiceEntry and WorkloadEntry `weight`, Consul's `Weights.Passing`): when a cluster's
  endpoints do not all have the same weight, ROUND_ROBIN is smooth weighted round robin, RANDOM draws by
  weight, LEAST_REQUEST is Envoy's weighted variant (earliest deadline first on weight / (requests in flight
  + 1)) and the ring gives each endpoint points in proportion to its weight.
- `warmup` / `warmupDurationSecs` (ROUND_ROBIN and LEAST_REQUEST only, as in Istio): Envoy's slow start,
  `SlowStart` below.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Protocol
from urllib.parse import parse_qsl

from shared.clock import Clock
from shared.model.destination_rule import ConsistentHashLB, LoadBalancerSettings, SimpleLB, WarmupConfiguration
from shared.model.proxy_config import Endpoint

DEFAULT_RING_SIZE = 1024
MAX_RING_SIZE = 8 * 1024 * 1024

EndpointKey = tuple[str, int]


def endpoint_key(endpoint: Endpoint) -> EndpointKey:
    return endpoint.address, endpoint.port


def hash64(text: str) -> int:
    """A stable 64-bit hash (the same on every proxy and every run, unlike Python's hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Picker(Protocol):
    def pick(self, available: Sequence[Endpoint], hash_key: int | None, active: Mapping[EndpointKey, int]) -> Endpoint:
        """One of `available` (never empty); `active` counts requests in flight per endpoint."""


class RoundRobinPicker:
    def __init__(self) -> None:
        self._next = 0

    def pick(self, available: Sequence[Endpoint], hash_key: int | None, active: Mapping[EndpointKey, int]) -> Endpoint:
        endpoint = available[self._next % len(available)]
        self._next = (self._next + 1) % (1 << 30)
        return endpoint


class RandomPicker:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, available: Sequence[Endpoint], hash_key: int | None, active: Mapping[EndpointKey, int]) -> Endpoint:
        return available[self._rng.randrange(len(available))]


class LeastRequestPicker:
    """Power of two choices: of two distinct random endpoints, the one with fewer requests in flight."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, available: Sequence[Endpoint], hash_key: int | None, active: Mapping[EndpointKey, int]) -> Endpoint:
        if len(available) == 1:
            return available[0]
        first, second = self._rng.sample(range(len(available)), 2)
        a, b = available[first], available[second]
        return b if active.get(endpoint_key(b), 0) < active.get(endpoint_key(a), 0) else a


class WeightedRoundRobinPicker:
    """Smooth weighted round robin: each endpoint gets its weight's share, interleaved (5:1:1 gives a a b a c a a)."""

    weighted = True

    def __init__(self) -> None:
        self._current: dict[EndpointKey, int] = {}

    def pick(self, available: Sequence[Endpoint], hash_key: int | None, active: Mapping[EndpointKey, int]) -> Endpoint:
        current = self._current
        total = 0
        best: Endpoint | None = None
        best_key: EndpointKey = ("", 0)
        best_value = 0
        for endpoint in available:
            key = endpoint_key(endpoint)
            value = current.get(key, 0) + endpoint.weight
            current[key] = value
            total += endpoint.weight
            if best is None or value > best_value:
                best, best_key, best_value = endpoint, key, value
        assert best is not None, "pick is never called without endpoints"
        current[best_key] = best_value - total
        return best


class WeightedRandomPicker:
    weighted = True

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, available: Sequence[Endpoint], hash_key: int | None, active: Mapping[EndpointKey, int]) -> Endpoint:
        return self._rng.choices(available, weights=[endpoint.weight for endpoint in available])[0]


class WeightedLeastRequestPicker:
    """Envoy's LEAST_REQUEST with unequal weights: earliest deadline first, where an endpoint picked is next due
    after (requests in flight + 1) / weight, so it gets traffic in proportion to its weight and less while busy
    (Envoy's default active_request_bias of 1.0)."""

    weighted = True

    def __init__(self) -> None:
        self._due: dict[EndpointKey, float] = {}
        self._now = 0.0

    def pick(self, available: Sequence[Endpoint], hash_key: int | None, active: Mapping[EndpointKey, int]) -> Endpoint:
        due = self._due
        best: Endpoint | None = None
        best_key: EndpointKey = ("", 0)
        best_due = 0.0
        for endpoint in available:
            key = endpoint_key(endpoint)
            when = due.get(key)
            if when is None or when < self._now:  # new, or back after an ejection: due now, not in the past
                when = due[key] = self._now + (active.get(key, 0) + 1) / endpoint.weight
            if best is None or when < best_due:
                best, best_key, best_due = endpoint, key, when
        assert best is not None, "pick is never called without endpoints"
        self._now = best_due
        due[best_key] = best_due + (active.get(best_key, 0) + 1) / best.weight
        return best


def is_weighted(endpoints: Sequence[Endpoint]) -> bool:
    """Whether the endpoints' weights differ (equal weights, whatever their value, balance as without)."""
    return len({endpoint.weight for endpoint in endpoints}) > 1


class RingHashPicker:
    """A hash ring over all of a cluster's endpoints; unavailable endpoints are skipped clockwise. With unequal
    weights an endpoint's points are its equal share scaled by its weight over the mean weight (at least one)."""

    def __init__(self, endpoints: Sequence[Endpoint], ring_size: int, rng: random.Random) -> None:
        self._fallback = RandomPicker(rng)
        weights: dict[EndpointKey, int] = {}
        for endpoint in endpoints:
            weights.setdefault(endpoint_key(endpoint), endpoint.weight)
        unique = sorted(weights)
        points: list[tuple[int, EndpointKey]] = []
        if unique:
            share = max(1, -(-min(ring_size, MAX_RING_SIZE) // len(unique)))
            per_endpoint = 1 << (share - 1).bit_length()
            mean = sum(weights.values()) / len(unique)
            for address, port in unique:
                replicas = max(1, round(per_endpoint * weights[(address, port)] / mean))
                points.extend((hash64(f"{address}:{port}_{replica}"), (address, port)) for replica in range(replicas))
        points.sort()
        self._hashes = [point for point, _ in points]
        self._owners = [owner for _, owner in points]

    def owner(self, hash_key: int, available: set[EndpointKey]) -> EndpointKey | None:
        """The first available endpoint clockwise from the key's point on the ring."""
        size = len(self._hashes)
        start = bisect.bisect_left(self._hashes, hash_key)
        for step in range(size):
            owner = self._owners[(start + step) % size]
            if owner in available:
                return owner
        return None

    def pick(self, available: Sequence[Endpoint], hash_key: int | None, active: Mapping[EndpointKey, int]) -> Endpoint:
        if hash_key is not None:
            by_key = {endpoint_key(e): e for e in available}
            owner = self.owner(hash_key, set(by_key))
            if owner is not None:
                return by_key[owner]
        return self._fallback.pick(available, hash_key, active)


class SlowStart:
    """Envoy's slow start, Istio's `warmup`: an endpoint that joins a running cluster gets its weight times
    max(minimumPercent, (age / duration) ^ (1 / aggression)) until `duration` has passed. Endpoints present
    when the cluster's runtime is built start warm (a sidecar that starts, or a changed policy, ramps nothing).
    While some endpoint warms, picks are drawn at random by those weights (Envoy keeps its round robin or
    least-request schedule over them; the shares are the same); afterwards the cluster's own picker runs."""

    def __init__(self, settings: WarmupConfiguration, clock: Clock) -> None:
        self._window = settings.duration
        self._floor = settings.minimum_percent / 100.0
        self._exponent = 1.0 / settings.aggression
        self._clock = clock
        self._joined: dict[EndpointKey, float] = {}
        self._until = float("-inf")
        """When the last endpoint that joined is warm."""

    def joined(self, keys: Iterable[EndpointKey]) -> None:
        """These endpoints joined the cluster now."""
        now = self._clock.monotonic()
        for key in keys:
            self._joined[key] = now
            self._until = now + self._window

    def keep_only(self, keys: Set[EndpointKey]) -> None:
        """The cluster's endpoints now: an endpoint that left and comes back warms again."""
        for key in [key for key in self._joined if key not in keys]:
            del self._joined[key]

    def warming(self) -> bool:
        return self._clock.monotonic() < self._until

    def factor(self, key: EndpointKey, now: float) -> float:
        """The share of its weight an endpoint gets now (1.0 once warm)."""
        joined = self._joined.get(key)
        if joined is None or now - joined >= self._window:
            return 1.0
        ramp: float = (max(now - joined, 0.0) / self._window) ** self._exponent
        return max(self._floor, ramp)

    def pick(self, available: Sequence[Endpoint], rng: random.Random) -> Endpoint:
        now = self._clock.monotonic()
        weights = [endpoint.weight * self.factor(endpoint_key(endpoint), now) for endpoint in available]
        return rng.choices(available, weights)[0]


def picker_for(settings: LoadBalancerSettings | None, endpoints: Sequence[Endpoint], rng: random.Random) -> Picker:
    if settings is not None and settings.consistent_hash is not None:
        return RingHashPicker(endpoints, settings.consistent_hash.ring_size() or DEFAULT_RING_SIZE, rng)
    simple = settings.simple if settings is not None else None
    weighted = is_weighted(endpoints)
    if simple in (SimpleLB.ROUND_ROBIN, SimpleLB.PASSTHROUGH):
        return WeightedRoundRobinPicker() if weighted else RoundRobinPicker()
    if simple is SimpleLB.RANDOM:
        return WeightedRandomPicker(rng) if weighted else RandomPicker(rng)
    return WeightedLeastRequestPicker() if weighted else LeastRequestPicker(rng)


@dataclass(frozen=True, slots=True)
class HashKeySource:
    """Where a consistent-hash key comes from, precomputed per cluster from `consistentHash`."""

    header: str | None = None
    cookie: str | None = None
    cookie_path: str | None = None
    cookie_ttl: float | None = None
    """Set: a request without the cookie gets one generated (Set-Cookie on its response)."""
    cookie_attributes: tuple[str, ...] = ()
    """`name=value` (or `name`) attributes added to a generated cookie."""
    source_ip: bool = False
    query_parameter: str | None = None

    @classmethod
    def of(cls, settings: LoadBalancerSettings | None) -> HashKeySource | None:
        spec: ConsistentHashLB | None = settings.consistent_hash if settings is not None else None
        if spec is None:
            return None
        return cls(
            header=spec.http_header_name.lower() if spec.http_header_name else None,
            cookie=spec.http_cookie.name if spec.http_cookie else None,
            cookie_path=spec.http_cookie.path if spec.http_cookie else None,
            cookie_ttl=spec.http_cookie.ttl if spec.http_cookie else None,
            cookie_attributes=tuple(
                attribute.name if attribute.value is None else f"{attribute.name}={attribute.value}"
                for attribute in (spec.http_cookie.attributes if spec.http_cookie else ())
            ),
            source_ip=bool(spec.use_source_ip),
            query_parameter=spec.http_query_parameter_name,
        )

    def key(self, headers: Mapping[str, str], remote: str | None, query: str) -> int | None:
        """The request's hash, or None when the request does not carry the key."""
        text: str | None = None
        if self.header is not None:
            text = headers.get(self.header)
        elif self.cookie is not None:
            text = _cookie(headers.get("cookie"), self.cookie)
        elif self.source_ip:
            text = remote
        elif self.query_parameter is not None and query:
            pairs = parse_qsl(query, keep_blank_values=True)
            text = next((value for name, value in pairs if name == self.query_parameter), None)
        return hash64(text) if text is not None else None

    def new_cookie(self, rng: random.Random) -> tuple[int, str] | None:
        """For a request without the affinity cookie: its hash key and the Set-Cookie value, if one is due."""
        if self.cookie is None or self.cookie_ttl is None:
            return None
        value = f"{rng.getrandbits(64):016x}"
        attributes = [f"{self.cookie}={value}"]
        if self.cookie_path:
            attributes.append(f"Path={self.cookie_path}")
        if self.cookie_ttl > 0:
            attributes.append(f"Max-Age={int(self.cookie_ttl)}")
        attributes.append("HttpOnly")
        attributes.extend(self.cookie_attributes)
        return hash64(value), "; ".join(attributes)


def _cookie(header: str | None, name: str) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None
