"""connectionPool limits as Envoy circuit breakers: in-flight admission, pending, retries budget."""

from __future__ import annotations

import pytest

from services.proxy.circuit_breaker import UNLIMITED, CircuitBreaker, Limits
from services.proxy.errors import UpstreamOverflow
from shared.model.destination_rule import ConnectionPoolSettings, RetryBudget


def _limits(raw: dict[str, object] | None) -> Limits:
    return Limits.of(ConnectionPoolSettings.model_validate(raw) if raw is not None else None)


def test_unset_means_unlimited() -> None:
    limits = _limits(None)
    assert limits == Limits(UNLIMITED, UNLIMITED, UNLIMITED, UNLIMITED)
    assert _limits({"tcp": {"connectTimeout": "1s"}, "http": {}}).max_in_flight >= UNLIMITED


def test_connections_plus_pending_bound_in_flight() -> None:
    breaker = CircuitBreaker("c", _limits({"tcp": {"maxConnections": 2}, "http": {"http1MaxPendingRequests": 1}}))
    for _ in range(3):
        breaker.admit()
    assert breaker.pending == 1
    with pytest.raises(UpstreamOverflow) as caught:
        breaker.admit()
    assert (caught.value.status, caught.value.flag) == (503, "UO")
    assert "cluster 'c'" in caught.value.message
    breaker.release()
    breaker.admit()


def test_max_requests_bounds_in_flight_too() -> None:
    breaker = CircuitBreaker("c", _limits({"http": {"http2MaxRequests": 1}}))
    breaker.admit()
    with pytest.raises(UpstreamOverflow):
        breaker.admit()


def test_retry_budget() -> None:
    breaker = CircuitBreaker("c", _limits({"http": {"maxRetries": 1}}))
    assert breaker.begin_retry()
    assert breaker.retries_full()
    assert not breaker.begin_retry()
    breaker.end_retry()
    assert breaker.begin_retry()


def test_zero_max_retries_allows_none() -> None:
    breaker = CircuitBreaker("c", _limits({"http": {"maxRetries": 0}}))
    assert not breaker.begin_retry()


def test_release_never_goes_negative() -> None:
    breaker = CircuitBreaker("c", Limits())
    breaker.release()
    breaker.end_retry()
    assert (breaker.active, breaker.retries) == (0, 0)


def test_a_retry_budget_is_a_share_of_the_attempts_in_flight_with_a_floor_and_replaces_max_retries() -> None:
    pool = ConnectionPoolSettings.model_validate({"http": {"maxRetries": 0}})
    breaker = CircuitBreaker(
        "c", Limits.of(pool, RetryBudget.model_validate({"percent": 25, "minRetryConcurrency": 2}))
    )
    assert breaker.retry_limit() == 2  # nothing in flight: the floor (maxRetries 0 no longer counts)
    for _ in range(20):
        breaker.admit()
    assert breaker.retry_limit() == 5  # 25 % of 20 attempts in flight
    for _ in range(5):
        assert breaker.begin_retry()
    assert breaker.retries_full() and not breaker.begin_retry()
    for _ in range(12):
        breaker.release()
    assert breaker.retry_limit() == 2 and breaker.retries_full()


def test_istio_defaults_for_an_empty_retry_budget() -> None:
    limits = Limits.of(None, RetryBudget.model_validate({}))
    assert limits.retry_budget == (20.0, 3)
