"""Convergence bookkeeping: pushed versions matched with ACKs on a fake clock; NACKs and superseded pushes."""

from __future__ import annotations

from services.pilot.convergence import Convergence
from services.pilot.metrics import PilotMetrics
from services.pilot.snapshot import Snapshot
from shared.bus.codec import Ack
from shared.clock import FakeClock


def ack(key: str, version: str, accepted: bool = True) -> Ack:
    return Ack(proxy_id=key, version=version, accepted=accepted, applied_version=version if accepted else "old")


def sample(metrics: PilotMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


async def test_a_push_converges_when_every_proxy_acked_its_version() -> None:
    clock, metrics = FakeClock(), PilotMetrics()
    tracker = Convergence(metrics, clock)
    observed = clock.monotonic()
    await clock.advance(0.1)
    await tracker.pushed(Snapshot(), observed, {"a": "v2", "b": "v2"})
    assert sample(metrics, "pilot_proxies_pending") == 2
    await clock.advance(0.2)
    tracker.ack("a", ack("a", "v1"))  # an old version answers nothing
    tracker.ack("a", ack("a", "v2"))
    assert tracker.converged == []
    await clock.advance(0.3)
    tracker.ack("b", ack("b", "v2"))
    assert len(tracker.converged) == 1 and abs(tracker.converged[0] - 0.6) < 1e-9
    assert sample(metrics, "pilot_convergence_seconds_count") == 1
    assert sample(metrics, "pilot_proxy_convergence_seconds_count") == 2
    assert sample(metrics, "pilot_proxies_pending") == 0


async def test_an_ack_that_arrives_before_the_push_is_registered_counts() -> None:
    clock = FakeClock()
    tracker = Convergence(PilotMetrics(), clock)
    observed = clock.monotonic()
    await clock.advance(0.05)
    tracker.ack("a", ack("a", "v2"))
    await clock.advance(1.0)
    await tracker.pushed(Snapshot(), observed, {"a": "v2"})
    assert len(tracker.converged) == 1 and abs(tracker.converged[0] - 0.05) < 1e-9


async def test_nack_counts_and_the_push_never_converges() -> None:
    clock, metrics = FakeClock(), PilotMetrics()
    tracker = Convergence(metrics, clock)
    await tracker.pushed(Snapshot(), clock.monotonic(), {"a": "v2", "b": "v2"})
    tracker.ack("a", ack("a", "v2", accepted=False))
    tracker.ack("b", ack("b", "v2"))
    assert tracker.converged == [] and sample(metrics, "pilot_proxy_nacks_total") == 1
    tracker.ack("c", ack("c", "v9", accepted=False), live=False)  # replayed at watch start: not a new NACK
    assert sample(metrics, "pilot_proxy_nacks_total") == 1


async def test_a_newer_version_supersedes_the_older_push() -> None:
    clock = FakeClock()
    tracker = Convergence(PilotMetrics(), clock)
    await tracker.pushed(Snapshot(), clock.monotonic(), {"a": "v2"})
    await tracker.pushed(Snapshot(), clock.monotonic(), {"a": "v3"})
    tracker.ack("a", ack("a", "v2"))
    assert tracker.converged == []
    tracker.ack("a", ack("a", "v3"))
    assert tracker.converged == [0.0]
