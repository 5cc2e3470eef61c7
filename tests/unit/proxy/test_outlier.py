"""Outlier detection on a fake clock: thresholds, ejection time growth, interval ticks, caps and panic."""

from __future__ import annotations

from services.proxy.lb import endpoint_key
from services.proxy.outlier import OutlierDetector
from shared.clock import FakeClock
from shared.model.destination_rule import OutlierDetection
from shared.model.proxy_config import Endpoint

HOSTS = [Endpoint(address="10.0.0.1", port=p) for p in range(1, 11)]
KEYS = [endpoint_key(e) for e in HOSTS]


def _detector(clock: FakeClock, **raw: object) -> OutlierDetector:
    return OutlierDetector(OutlierDetection.model_validate(raw), clock)


def _fail(detector: OutlierDetector, host: Endpoint, times: int, status: int | None = 500) -> bool:
    return any([detector.report(host, status, KEYS) for _ in range(times)])


def test_defaults_are_istios() -> None:
    settings = OutlierDetection()
    assert (settings.consecutive_5xx_errors, settings.consecutive_gateway_errors) == (5, None)
    assert (settings.interval, settings.base_ejection_time) == (10.0, 30.0)
    assert (settings.max_ejection_percent, settings.min_health_percent) == (10, 0)


def test_five_consecutive_5xx_eject_and_a_success_resets() -> None:
    clock = FakeClock()
    detector = _detector(clock)
    assert not _fail(detector, HOSTS[0], 4)
    detector.report(HOSTS[0], 200, KEYS)
    assert not _fail(detector, HOSTS[0], 4)
    assert _fail(detector, HOSTS[0], 1)
    assert HOSTS[0] not in detector.available(HOSTS)


async def test_ejection_ends_on_the_interval_tick_after_base_time_and_grows() -> None:
    clock = FakeClock(start=0.0)
    detector = _detector(clock, consecutive5xxErrors=1, interval="10s", baseEjectionTime="30s")
    await clock.advance(5)
    assert _fail(detector, HOSTS[0], 1)
    await clock.advance(34.9)  # t = 39.9: 30s passed at t=35, the next tick is t=40
    assert detector.is_ejected(KEYS[0])
    await clock.advance(0.1)
    assert not detector.is_ejected(KEYS[0])
    assert _fail(detector, HOSTS[0], 1)  # second ejection at t=40: 60s -> back at t=100
    await clock.advance(59.9)
    assert detector.is_ejected(KEYS[0])
    await clock.advance(0.1)
    assert not detector.is_ejected(KEYS[0])


async def test_healthy_intervals_shrink_the_ejection_multiplier() -> None:
    clock = FakeClock(start=0.0)
    detector = _detector(clock, consecutive5xxErrors=1, interval="10s", baseEjectionTime="30s")
    _fail(detector, HOSTS[0], 1)
    _fail(detector, HOSTS[1], 1)  # 10 % of 10 hosts is one, but the first ejection is always allowed
    await clock.advance(30)
    await clock.advance(100)  # ten healthy ticks
    assert _fail(detector, HOSTS[0], 1)
    await clock.advance(30)
    assert not detector.is_ejected(KEYS[0])  # 30s again, not 60s


async def test_ejection_time_is_capped_at_300s() -> None:
    clock = FakeClock(start=0.0)
    detector = _detector(clock, consecutive5xxErrors=1, interval="1s", baseEjectionTime="200s")
    _fail(detector, HOSTS[0], 1)
    await clock.advance(200)
    _fail(detector, HOSTS[0], 1)
    await clock.advance(300)
    assert not detector.is_ejected(KEYS[0])


def test_max_ejection_percent_allows_at_least_one() -> None:
    detector = _detector(FakeClock(), consecutive5xxErrors=1, maxEjectionPercent=10)
    assert _fail(detector, HOSTS[0], 1)
    assert not _fail(detector, HOSTS[1], 1)
    assert len(detector.available(HOSTS)) == 9
    wide = _detector(FakeClock(), consecutive5xxErrors=1, maxEjectionPercent=30)
    assert [_fail(wide, host, 1) for host in HOSTS[:4]] == [True, True, True, False]


def test_gateway_errors_counted_separately_and_local_failures_count_as_both() -> None:
    detector = _detector(FakeClock(), consecutive5xxErrors=0, consecutiveGatewayErrors=2, maxEjectionPercent=100)
    assert not _fail(detector, HOSTS[0], 5, 500)  # 500 is not a gateway error, and 5xx counting is off
    detector.report(HOSTS[0], 502, KEYS)
    detector.report(HOSTS[0], 500, KEYS)  # resets the gateway run
    assert not detector.report(HOSTS[0], 503, KEYS)
    assert detector.report(HOSTS[0], None, KEYS)  # a connect failure is a gateway error
    assert _fail(detector, HOSTS[1], 2, 504)


def test_min_health_percent_panics_to_all_hosts() -> None:
    hosts = [Endpoint(address="10.0.0.1", port=p, healthy=p == 1) for p in range(1, 5)]
    keys = [endpoint_key(e) for e in hosts]
    detector = _detector(FakeClock(), consecutive5xxErrors=1, maxEjectionPercent=100, minHealthPercent=50)
    assert detector.available(hosts) == hosts  # one of four healthy: 25 % < 50 %: panic
    calm = _detector(FakeClock(), consecutive5xxErrors=1, maxEjectionPercent=100)
    assert calm.available(hosts) == hosts[:1]
    calm.report(hosts[0], 503, keys)
    assert calm.available(hosts) == []


def test_forget_except_drops_departed_hosts() -> None:
    detector = _detector(FakeClock(), consecutive5xxErrors=1)
    _fail(detector, HOSTS[0], 1)
    detector.forget_except(set(KEYS[1:]))
    assert not detector.is_ejected(KEYS[0])


def test_split_local_origin_failures_eject_on_their_own_count() -> None:
    detector = _detector(FakeClock(), splitExternalLocalOriginErrors=True, consecutiveLocalOriginFailures=3)
    assert not _fail(detector, HOSTS[0], 2, status=None)
    assert not _fail(detector, HOSTS[0], 4, status=500)  # answers reset the local count, and 4 < 5 5xx
    assert not _fail(detector, HOSTS[0], 2, status=None)  # local failures do not add to the 5xx count
    assert _fail(detector, HOSTS[0], 1, status=None)
    assert HOSTS[0] not in detector.available(HOSTS)


def test_split_mode_keeps_5xx_ejection_to_answers() -> None:
    detector = _detector(FakeClock(), splitExternalLocalOriginErrors=True)
    assert not _fail(detector, HOSTS[0], 4, status=None)
    assert not _fail(detector, HOSTS[0], 4, status=503)
    assert _fail(detector, HOSTS[0], 1, status=503)


def test_without_split_a_connect_failure_counts_as_a_gateway_error() -> None:
    detector = _detector(FakeClock(), consecutive5xxErrors=0, consecutiveGatewayErrors=3)
    assert not _fail(detector, HOSTS[0], 2, status=None)
    assert _fail(detector, HOSTS[0], 1, status=502)


def test_zero_local_origin_failures_never_ejects() -> None:
    detector = _detector(FakeClock(), splitExternalLocalOriginErrors=True, consecutiveLocalOriginFailures=0)
    assert not _fail(detector, HOSTS[0], 50, status=None)
