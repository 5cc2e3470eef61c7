"""Outbound filter around the upstream call: which failures are retried, how often, and the backoff between tries."""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from dataclasses import dataclass

from services.proxy.h2_names import GRPC_STATUS
from shared.model.virtual_service import HTTPRetry

BACKOFF_BASE = 0.025
"""Envoy's default base interval; the cap is ten times it."""
GATEWAY_ERRORS = frozenset({502, 503, 504})
KNOWN_CONDITIONS = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "connect-failure",
        "refused-stream",
        "retriable-4xx",
        "retriable-status-codes",
        "unavailable",
        "cancelled",
        "deadline-exceeded",
        "resource-exhausted",
        "internal",
        "envoy-ratelimited",
        "retriable-headers",
        "reset-before-request",
        "http3-post-connect-failure",
    }
)
DEFAULT_CONDITIONS = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
_GRPC_CONDITIONS = {
    "cancelled": "1",
    "deadline-exceeded": "4",
    "resource-exhausted": "8",
    "internal": "13",
    "unavailable": "14",
}
"""Envoy's gRPC retry conditions and the gRPC status each stands for (read from a response's headers, where a
trailers-only gRPC answer carries it)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """One route's retries: `attempts` extra tries after the first, on the listed conditions."""

    attempts: int
    per_try_timeout: float | None
    conditions: frozenset[str]
    status_codes: frozenset[int]
    grpc_codes: frozenset[str] = frozenset()
    """The gRPC statuses retried (from the gRPC conditions among `conditions`)."""
    backoff_base: float = BACKOFF_BASE
    """`retries.backoff`: the base interval; the cap is ten times it."""
    ignore_previous_hosts: bool = True
    """`retryIgnorePreviousHosts`: a retry picks an endpoint not tried yet when there is one."""
    remote_localities: bool = False
    """`retryRemoteLocalities`: a retry leaves out the locality groups already tried while another has endpoints."""

    @classmethod
    def of(cls, retry: HTTPRetry | None) -> RetryPolicy:
        """Parse Istio's retries block; an unknown retryOn condition raises ValueError naming it."""
        if retry is None or retry.attempts == 0:
            return NO_RETRIES
        conditions: set[str] = set()
        codes: set[int] = set()
        for token in (retry.retry_on or DEFAULT_CONDITIONS).split(","):
            token = token.strip()
            if not token:
                continue
            if token.isdigit():
                codes.add(int(token))
            elif token in KNOWN_CONDITIONS:
                conditions.add(token)
            else:
                raise ValueError(f"retries.retryOn: unknown condition {token!r}")
        # 0s means no per-try timeout, as for the route timeout.
        grpc = frozenset(code for name, code in _GRPC_CONDITIONS.items() if name in conditions)
        return cls(
            retry.attempts,
            retry.per_try_timeout or None,
            frozenset(conditions),
            frozenset(codes),
            grpc,
            retry.backoff or BACKOFF_BASE,
            retry.retry_ignore_previous_hosts is not False,
            retry.retry_remote_localities is True,
        )

    @property
    def tries(self) -> int:
        return 1 + self.attempts

    def retry_status(self, status: int) -> bool:
        if "5xx" in self.conditions and status >= 500:
            return True
        if "gateway-error" in self.conditions and status in GATEWAY_ERRORS:
            return True
        if "retriable-4xx" in self.conditions and status == 409:
            return True
        return status in self.status_codes

    def retry_grpc(self, headers: Mapping[str, str]) -> bool:
        """A gRPC answer whose status (in its headers: a trailers-only response) is among the retried ones."""
        return bool(self.grpc_codes) and headers.get(GRPC_STATUS) in self.grpc_codes

    def retry_refused_stream(self) -> bool:
        return bool(self.conditions & {"refused-stream", "reset", "5xx", "gateway-error"})

    def retry_connect_failure(self) -> bool:
        return bool(self.conditions & {"connect-failure", "5xx", "gateway-error", "reset", "reset-before-request"})

    def retry_timeout(self) -> bool:
        """A per-try timeout is retried like Envoy does: on 5xx, gateway-error and reset."""
        return bool(self.conditions & {"5xx", "gateway-error", "reset"})

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """Envoy's full-jitter exponential backoff: uniform in [0, (2^n - 1) * base], capped at 10 * base (base:
        `retries.backoff`, else 25ms)."""
        base = self.backoff_base
        ceiling = min(((1 << retry_number) - 1) * base, 10 * base)
        return rng.uniform(0.0, max(ceiling, base))


NO_RETRIES = RetryPolicy(0, None, frozenset(), frozenset())


@functools.lru_cache(maxsize=1024)
def policy_for(retry: HTTPRetry | None) -> RetryPolicy:
    """RetryPolicy.of, parsed once per distinct retries block."""
    return RetryPolicy.of(retry)
