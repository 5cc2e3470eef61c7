"""FakeClock: sleepers wake in deadline order, only when time is advanced."""

from __future__ import annotations

import asyncio

from shared.clock import FakeClock


async def test_sleepers_wake_in_deadline_order_only_when_advanced() -> None:
    clock = FakeClock(start=100.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(sleeper("late", 5)), asyncio.create_task(sleeper("early", 1))]
    await asyncio.sleep(0)
    await clock.advance(0.5)
    assert woke == []
    await clock.advance(4.5)
    await asyncio.gather(*tasks)
    assert woke == [("early", 101.0), ("late", 105.0)]
    assert clock.monotonic() == 105.0
