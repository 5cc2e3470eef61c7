"""Injectable time: components take a Clock so backoff, debounce, renewal and ejection tests run instantly."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    monotonic = staticmethod(time.monotonic)
    """The C functions themselves: a per-request read costs no Python frame."""
    wall = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """Time moves only when a test calls advance(); sleepers wake in deadline order."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = 0

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._counter += 1
        self._sleepers.append((self._now + max(seconds, 0.0), self._counter, future))
        self._sleepers.sort(key=lambda item: (item[0], item[1]))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose deadline passed, and let them run."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = self._sleepers.pop(0)
            self._now = deadline
            if not future.done():
                future.set_result(None)
            await asyncio.sleep(0)
        self._now = target
        await asyncio.sleep(0)


SYSTEM_CLOCK = SystemClock()
