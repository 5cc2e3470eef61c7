"""Passive health of one cluster's endpoints: DestinationRule outlierDetection, fed by every upstream outcome.

Envoy semantics as Istio configures them, all timers on the injected Clock:
- `consecutive5xxErrors` (default 5; 0 disables) counts 5xx answers in a row, `consecutiveGatewayErrors`
  (unset: not enforced) counts 502/503/504 in a row; a connect failure or a timeout counts as both (Envoy
  without split_external_local_origin_errors maps them to 503/504). Any other answer resets the counters,
  and a non-gateway 5xx resets the gateway counter.
- `splitExternalLocalOriginErrors` (default false): a connect failure or a timeout counts only towards
  `consecutiveLocalOriginFailures` (default 5; 0 disables), not as a 5xx or gateway error; any answer from
  the endpoint (whatever its status) resets that count, as Envoy's split mode does.
- Reaching a threshold ejects the endpoint at once for `baseEjectionTime` (default 30s) x the number of
  times it was ejected, capped at 300s (Envoy's max_ejection_time). It comes back at the first `interval`
  tick (default 10s, ticks counted from the detector's start) after that time; every further tick it stays
  in, its ejection count drops by one.
- At most `maxEjectionPercent` (default 10) of the endpoints are ejected at once, but one endpoint can
  always be ejected (Envoy's rule), so small clusters still lose a failing host.
- `minHealthPercent` (default 0): when fewer than that share of the endpoints is healthy and not ejected,
  the cluster is in panic and balances over all its endpoints, ignoring health and ejections.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from services.proxy.lb import EndpointKey, endpoint_key
from shared.clock import Clock
from shared.model.destination_rule import OutlierDetection
from shared.model.proxy_config import Endpoint

MAX_EJECTION_TIME = 300.0
GATEWAY_ERRORS = frozenset({502, 503, 504})


@dataclass(slots=True)
class _HostState:
    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    consecutive_local: int = 0
    """Connect failures and timeouts in a row (counted apart only with splitExternalLocalOriginErrors)."""
    ejections: int = 0
    """How many times the host was ejected, as it stood at its last ejection."""
    back_at: float | None = None
    """When the last ejection ends (an interval tick); None if never ejected."""


class OutlierDetector:
    """Ejection state of one cluster's endpoints; survives config versions while the cluster's policy stays."""

    def __init__(self, settings: OutlierDetection, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._start = clock.monotonic()
        self._hosts: dict[EndpointKey, _HostState] = {}

    @property
    def settings(self) -> OutlierDetection:
        return self._settings

    def _state(self, key: EndpointKey) -> _HostState:
        state = self._hosts.get(key)
        if state is None:
            state = self._hosts[key] = _HostState()
        return state

    def is_ejected(self, key: EndpointKey, now: float | None = None) -> bool:
        state = self._hosts.get(key)
        if state is None or state.back_at is None:
            return False
        return (self._clock.monotonic() if now is None else now) < state.back_at

    def ejected_count(self, keys: Sequence[EndpointKey], now: float) -> int:
        return sum(self.is_ejected(key, now) for key in keys)

    def available(self, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
        """The endpoints to balance over: healthy and not ejected, or all of them in panic."""
        now = self._clock.monotonic()
        usable = [e for e in endpoints if e.healthy and not self.is_ejected(endpoint_key(e), now)]
        threshold = self._settings.min_health_percent
        if endpoints and threshold > 0 and len(usable) * 100 < threshold * len(endpoints):
            return list(endpoints)
        return usable

    def report(self, endpoint: Endpoint, status: int | None, cluster_keys: Sequence[EndpointKey]) -> bool:
        """Record one outcome (`status` None: connect failure or timeout); True when it ejected the endpoint."""
        key = endpoint_key(endpoint)
        state = self._state(key)
        settings = self._settings
        if status is None and settings.split_external_local_origin_errors:
            state.consecutive_local += 1
            tripped = 0 < settings.consecutive_local_origin_failures <= state.consecutive_local
        else:
            if status is not None:
                state.consecutive_local = 0  # it answered: the connection works
            if status is None or status in GATEWAY_ERRORS:
                state.consecutive_5xx += 1
                state.consecutive_gateway += 1
            elif status >= 500:
                state.consecutive_5xx += 1
                state.consecutive_gateway = 0
            else:
                state.consecutive_5xx = 0
                state.consecutive_gateway = 0
                return False
            tripped = (0 < settings.consecutive_5xx_errors <= state.consecutive_5xx) or (
                settings.consecutive_gateway_errors is not None
                and 0 < settings.consecutive_gateway_errors <= state.consecutive_gateway
            )
        if not tripped:
            return False
        now = self._clock.monotonic()
        if self.is_ejected(key, now) or not self._may_eject(cluster_keys, now):
            return False
        self._eject(state, now)
        return True

    def _may_eject(self, keys: Sequence[EndpointKey], now: float) -> bool:
        ejected = self.ejected_count(keys, now)
        if ejected == 0:
            return True
        return (ejected + 1) * 100 <= self._settings.max_ejection_percent * max(len(keys), 1)

    def _eject(self, state: _HostState, now: float) -> None:
        interval = self._settings.interval or 1e-3
        previous = state.ejections
        if state.back_at is not None and previous > 0:
            healthy_ticks = math.floor(max(now - state.back_at, 0.0) / interval)
            previous = max(previous - healthy_ticks, 0)
        state.ejections = previous + 1
        base = self._settings.base_ejection_time
        duration = min(base * state.ejections, max(MAX_EJECTION_TIME, base))
        ready = now + duration
        ticks = math.ceil((ready - self._start) / interval)
        state.back_at = self._start + ticks * interval
        state.consecutive_5xx = 0
        state.consecutive_gateway = 0
        state.consecutive_local = 0

    def forget_except(self, keys: set[EndpointKey]) -> None:
        """Drop the state of endpoints that left the cluster."""
        for key in [key for key in self._hosts if key not in keys]:
            del self._hosts[key]
