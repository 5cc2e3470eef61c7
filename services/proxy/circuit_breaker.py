"""Per-cluster admission before an upstream attempt: DestinationRule connectionPool as Envoy's circuit breakers.

Istio maps `tcp.maxConnections` to max_connections, `http.http1MaxPendingRequests` to max_pending_requests,
`http.http2MaxRequests` to max_requests and `http.maxRetries` to max_retries; unset means 2^32-1. Upstream
connections here are HTTP/1.1, one request per connection at a time, so an attempt beyond `maxConnections`
in flight waits for a connection (it is pending) and an attempt beyond `maxConnections +
http1MaxPendingRequests` (or beyond `http2MaxRequests`) overflows: 503 with flag UO at once. A retry
beyond `maxRetries` retries in flight is not made; the last answer stands. With a `retryBudget` (Istio's
trafficPolicy.retryBudget, Envoy's retry budget) the limit on retries in flight is instead `percent` of the
attempts in flight, never below `minRetryConcurrency`. Counts are per cluster and per proxy, like Envoy's.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.proxy.errors import UpstreamOverflow
from shared.model.destination_rule import ConnectionPoolSettings, RetryBudget

UNLIMITED = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = UNLIMITED
    max_pending_requests: int = UNLIMITED
    max_requests: int = UNLIMITED
    max_retries: int = UNLIMITED
    retry_budget: tuple[float, int] | None = None
    """(percent, minRetryConcurrency); replaces `max_retries` when set."""

    @classmethod
    def of(cls, pool: ConnectionPoolSettings | None, budget: RetryBudget | None = None) -> Limits:
        tcp = pool.tcp if pool is not None else None
        http = pool.http if pool is not None else None
        return cls(
            max_connections=(tcp.max_connections if tcp and tcp.max_connections else UNLIMITED),
            max_pending_requests=(
                http.http1_max_pending_requests if http and http.http1_max_pending_requests else UNLIMITED
            ),
            max_requests=(http.http2_max_requests if http and http.http2_max_requests else UNLIMITED),
            max_retries=(http.max_retries if http and http.max_retries is not None else UNLIMITED),
            retry_budget=(budget.percent, budget.min_retry_concurrency) if budget is not None else None,
        )

    @property
    def max_in_flight(self) -> int:
        return min(self.max_requests, self.max_connections + self.max_pending_requests)


class CircuitBreaker:
    """Counts one cluster's attempts and retries in flight; `admit`/`release` bracket every attempt."""

    def __init__(self, cluster: str, limits: Limits) -> None:
        self.cluster = cluster
        self.limits = limits
        self._max_in_flight = limits.max_in_flight
        self.active = 0
        self.retries = 0

    @property
    def pending(self) -> int:
        """Attempts waiting for a connection (beyond maxConnections in flight)."""
        return max(self.active - self.limits.max_connections, 0)

    def admit(self) -> None:
        """Count one more attempt in flight, or raise UpstreamOverflow (503 UO) when the cluster is full."""
        if self.active >= self._max_in_flight:
            raise UpstreamOverflow(
                f"upstream connect error or disconnect/reset before headers. reset reason: overflow "
                f"(cluster {self.cluster!r}: {self.active} requests in flight)"
            )
        self.active += 1

    def release(self) -> None:
        if self.active > 0:
            self.active -= 1

    def retry_limit(self) -> int:
        """Retries allowed in flight now: the budget's share of the attempts in flight, else maxRetries."""
        budget = self.limits.retry_budget
        if budget is None:
            return self.limits.max_retries
        percent, minimum = budget
        return max(minimum, int(self.active * percent / 100))

    def begin_retry(self) -> bool:
        """True (and counted) when one more retry fits under the limit."""
        if self.retries >= self.retry_limit():
            return False
        self.retries += 1
        return True

    def retries_full(self) -> bool:
        return self.retries >= self.retry_limit()

    def end_retry(self) -> None:
        self.retries = max(self.retries - 1, 0)
