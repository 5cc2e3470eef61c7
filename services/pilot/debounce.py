"""Debounce between the watches and the push: many change events become one push, after a quiet period.

A push starts once no change arrived for `quiet` seconds, or at the latest `max_delay` seconds after the
first change not yet pushed, so a steady stream of changes still gets pushed. Time comes from a Clock.
"""

from __future__ import annotations

import asyncio

from shared.clock import SYSTEM_CLOCK, Clock

DEFAULT_QUIET = 0.1
DEFAULT_MAX_DELAY = 10.0


class Debouncer:
    def __init__(
        self, clock: Clock = SYSTEM_CLOCK, quiet: float = DEFAULT_QUIET, max_delay: float = DEFAULT_MAX_DELAY
    ) -> None:
        if quiet < 0 or max_delay < quiet:
            raise ValueError(f"debounce: need 0 <= quiet ({quiet}) <= max_delay ({max_delay})")
        self._clock = clock
        self._quiet = quiet
        self._max_delay = max_delay
        self._changed = asyncio.Event()
        self._first: float | None = None
        self._last = 0.0
        self.events = 0
        """Change events merged into the pending push (reset when wait() returns)."""
        self.first_change: float | None = None
        """Monotonic time of the first change the last push covers (set when wait() returns)."""

    def notify(self) -> None:
        """Record one change; cheap and synchronous so watch callbacks can call it."""
        now = self._clock.monotonic()
        if self._first is None:
            self._first = now
        self._last = now
        self.events += 1
        self._changed.set()

    async def wait(self) -> int:
        """Return when a push is due; the number of change events it covers."""
        await self._changed.wait()
        while True:
            assert self._first is not None, "change flagged without a first change time"
            now = self._clock.monotonic()
            due = min(self._last + self._quiet, self._first + self._max_delay)
            if now >= due:
                break
            await self._clock.sleep(due - now)
        events, self.events = self.events, 0
        self.first_change, self._first = self._first, None
        self._changed.clear()
        return events
