"""Debounce on a FakeClock: a quiet period merges bursts, the max delay bounds a steady stream."""

from __future__ import annotations

import asyncio

import pytest

from services.pilot.debounce import Debouncer
from shared.clock import FakeClock


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_burst_becomes_one_push_after_the_quiet_period() -> None:
    clock = FakeClock()
    debouncer = Debouncer(clock, quiet=0.1, max_delay=10.0)
    waiter = asyncio.create_task(debouncer.wait())
    for _ in range(3):
        debouncer.notify()
        await clock.advance(0.05)
    await settle()
    assert not waiter.done()
    await clock.advance(0.06)
    await settle()
    assert waiter.done() and waiter.result() == 3


async def test_nothing_is_due_without_a_change() -> None:
    clock = FakeClock()
    debouncer = Debouncer(clock)
    waiter = asyncio.create_task(debouncer.wait())
    await clock.advance(60)
    await settle()
    assert not waiter.done()
    waiter.cancel()


async def test_a_steady_stream_is_pushed_at_the_max_delay() -> None:
    clock = FakeClock()
    debouncer = Debouncer(clock, quiet=0.1, max_delay=1.0)
    waiter = asyncio.create_task(debouncer.wait())
    started = clock.monotonic()
    while not waiter.done():
        debouncer.notify()
        await clock.advance(0.05)
        await settle()
        assert clock.monotonic() - started < 1.2, "push not started within the max delay"
    assert clock.monotonic() - started >= 1.0
    assert waiter.result() >= 20


async def test_changes_after_a_push_start_a_new_window() -> None:
    clock = FakeClock()
    debouncer = Debouncer(clock, quiet=0.1, max_delay=10.0)
    debouncer.notify()
    first = asyncio.create_task(debouncer.wait())
    await clock.advance(0.2)
    await settle()
    assert first.result() == 1
    second = asyncio.create_task(debouncer.wait())
    await settle()
    assert not second.done()
    debouncer.notify()
    await clock.advance(0.2)
    await settle()
    assert second.result() == 1


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_delay"):
        Debouncer(FakeClock(), quiet=2.0, max_delay=1.0)
