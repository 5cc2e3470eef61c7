"""Fault injection decisions from config with a seeded RNG: percentages hold, a missing percentage means all."""

from __future__ import annotations

import math
import random

from services.proxy.faults import NO_FAULT, decide_fault
from shared.model.virtual_service import HTTPFaultInjection


def _fault(raw: dict[str, object]) -> HTTPFaultInjection:
    return HTTPFaultInjection.model_validate(raw)


def test_abort_percentage_within_three_sigma() -> None:
    fault = _fault({"abort": {"httpStatus": 503, "percentage": {"value": 10}}})
    rng = random.Random(11)
    n = 1000
    aborted = sum(decide_fault(fault, rng).abort is not None for _ in range(n))
    assert abs(aborted - 100) <= 3 * math.sqrt(n * 0.1 * 0.9), aborted


def test_abort_carries_status_and_fi_flag() -> None:
    decision = decide_fault(_fault({"abort": {"httpStatus": 418}}), random.Random(1))
    assert decision.abort is not None
    assert (decision.abort.status, decision.abort.flag) == (418, "FI")


def test_delay_without_percentage_applies_to_every_request() -> None:
    fault = _fault({"delay": {"fixedDelay": "250ms"}})
    rng = random.Random(2)
    assert all(decide_fault(fault, rng).delay == 0.25 for _ in range(100))


def test_zero_percent_never_fires_and_no_fault_is_noop() -> None:
    fault = _fault({"abort": {"httpStatus": 500, "percentage": {"value": 0}}})
    rng = random.Random(3)
    assert all(decide_fault(fault, rng).abort is None for _ in range(200))
    assert decide_fault(None, rng) is NO_FAULT
