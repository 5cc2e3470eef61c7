"""Retry policy parsing and decisions: conditions, status codes, backoff bounds, NACK on unknown conditions."""

from __future__ import annotations

import random

import pytest

from services.proxy.retry import BACKOFF_BASE, NO_RETRIES, RetryPolicy
from services.proxy.snapshot import ConfigSnapshot
from shared.model.proxy_config import ProxyConfig
from shared.model.virtual_service import HTTPRetry


def test_no_retries_block_means_one_try() -> None:
    assert RetryPolicy.of(None) is NO_RETRIES
    assert NO_RETRIES.tries == 1
    assert RetryPolicy.of(HTTPRetry(attempts=0)).tries == 1


def test_conditions_and_codes() -> None:
    policy = RetryPolicy.of(HTTPRetry(attempts=3, retry_on="gateway-error, 429,retriable-4xx", per_try_timeout=1))
    assert policy.tries == 4 and policy.per_try_timeout == 1.0
    assert policy.retry_status(502) and policy.retry_status(429) and policy.retry_status(409)
    assert not policy.retry_status(500)
    assert policy.retry_connect_failure() and policy.retry_timeout()


def test_default_conditions_retry_connect_failures_not_5xx() -> None:
    policy = RetryPolicy.of(HTTPRetry(attempts=2))
    assert policy.retry_connect_failure()
    assert not policy.retry_status(500)
    assert not policy.retry_timeout()


def test_unknown_condition_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="bogus"):
        RetryPolicy.of(HTTPRetry(attempts=1, retry_on="5xx,bogus"))


def test_backoff_is_bounded() -> None:
    policy = RetryPolicy.of(HTTPRetry(attempts=5, retry_on="5xx"))
    rng = random.Random(9)
    for retry_number in range(1, 8):
        for _ in range(50):
            assert 0.0 <= policy.backoff(retry_number, rng) <= 10 * BACKOFF_BASE


def test_a_backoff_sets_the_base_interval_and_the_cap_is_ten_times_it() -> None:
    policy = RetryPolicy.of(HTTPRetry.model_validate({"attempts": 5, "retryOn": "5xx", "backoff": "100ms"}))
    rng = random.Random(3)
    first = [policy.backoff(1, rng) for _ in range(200)]
    late = [policy.backoff(7, rng) for _ in range(200)]
    assert max(first) <= 0.1 and max(first) > 0.05  # the first retry waits up to one base interval
    assert max(late) <= 1.0 and max(late) > 0.5  # capped at 10 x 100ms, not at Envoy's default 250ms


def test_host_and_locality_flags_default_as_in_istio() -> None:
    default = RetryPolicy.of(HTTPRetry(attempts=2))
    assert default.ignore_previous_hosts and not default.remote_localities and default.backoff_base == BACKOFF_BASE
    flags = {"attempts": 2, "retryIgnorePreviousHosts": False, "retryRemoteLocalities": True}
    chosen = RetryPolicy.of(HTTPRetry.model_validate(flags))
    assert not chosen.ignore_previous_hosts and chosen.remote_localities


def test_a_backoff_under_one_millisecond_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1ms"):
        HTTPRetry.model_validate({"attempts": 2, "backoff": "500us"})


def test_config_with_unknown_condition_is_rejected() -> None:
    config = ProxyConfig.model_validate(
        {
            "proxyId": "p",
            "service": "s",
            "namespace": "default",
            "virtualHosts": [
                {
                    "name": "a",
                    "domains": ["a"],
                    "routes": [{"route": [{"cluster": "c"}], "retries": {"attempts": 1, "retryOn": "nope"}}],
                }
            ],
            "clusters": [{"name": "c", "host": "a", "port": 80}],
        }
    )
    with pytest.raises(ValueError, match=r"routes\[0\].*nope"):
        ConfigSnapshot.build(config, random.Random(1))


def test_zero_per_try_timeout_means_none() -> None:
    assert RetryPolicy.of(HTTPRetry.model_validate({"attempts": 1, "perTryTimeout": "0s"})).per_try_timeout is None


def test_grpc_conditions_retry_their_statuses_only() -> None:
    default = RetryPolicy.of(HTTPRetry(attempts=2))  # Istio's default: unavailable and cancelled
    assert default.retry_grpc({"grpc-status": "14"}) and default.retry_grpc({"grpc-status": "1"})
    assert not default.retry_grpc({"grpc-status": "4"}) and not default.retry_grpc({})
    chosen = RetryPolicy.of(HTTPRetry(attempts=2, retry_on="deadline-exceeded,internal,resource-exhausted"))
    assert [chosen.retry_grpc({"grpc-status": code}) for code in ("4", "13", "8", "14", "0")] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert not RetryPolicy.of(HTTPRetry(attempts=2, retry_on="5xx")).retry_grpc({"grpc-status": "14"})
    assert RetryPolicy.of(HTTPRetry(attempts=2, retry_on="refused-stream")).retry_refused_stream()
    assert not RetryPolicy.of(HTTPRetry(attempts=2, retry_on="retriable-4xx")).retry_refused_stream()
