"""Retry pacing for pilot's watches: capped exponential backoff on an injected Clock."""

from __future__ import annotations

from shared.clock import Clock


class Backoff:
    def __init__(self, clock: Clock, initial: float = 0.1, cap: float = 5.0) -> None:
        if not 0 < initial <= cap:
            raise ValueError(f"backoff: need 0 < initial ({initial}) <= cap ({cap})")
        self._clock = clock
        self._initial = initial
        self._cap = cap
        self._next = initial

    @property
    def next_delay(self) -> float:
        return self._next

    def reset(self) -> None:
        self._next = self._initial

    async def sleep(self) -> None:
        delay, self._next = self._next, min(self._next * 2, self._cap)
        await self._clock.sleep(delay)
