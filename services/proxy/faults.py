"""Outbound filter before the upstream call: VirtualService fault injection (delay, abort) by percentage."""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.proxy.errors import ProxyError
from shared.model.base import Percent
from shared.model.virtual_service import HTTPFaultInjection


class InjectedAbort(ProxyError):
    flag = "FI"

    def __init__(self, status: int) -> None:
        super().__init__("fault filter abort")
        self.status = status


@dataclass(frozen=True, slots=True)
class FaultDecision:
    delay: float
    """Seconds to hold the request before going on (0: none)."""
    abort: InjectedAbort | None


NO_FAULT = FaultDecision(0.0, None)


def _hit(percentage: Percent | None, rng: random.Random) -> bool:
    """No percentage means every request, as in Istio."""
    if percentage is None:
        return True
    return rng.random() * 100.0 < percentage.value


def decide_fault(fault: HTTPFaultInjection | None, rng: random.Random) -> FaultDecision:
    if fault is None:
        return NO_FAULT
    delay = 0.0
    if fault.delay is not None and _hit(fault.delay.percentage, rng):
        delay = fault.delay.fixed_delay
    abort = None
    if fault.abort is not None and _hit(fault.abort.percentage, rng):
        abort = InjectedAbort(fault.abort.http_status)
    return FaultDecision(delay, abort)
