"""Results of one generation pass kept for the next one, reused where their inputs have not changed.

Generation is pure: a cluster or a virtual host depends only on its inputs (instances, rules, policies).
Most changes touch a handful of services, so a pass over a 1,000-service catalog recomputes those and
reuses the rest. Each result sits in a slot with the exact inputs it was computed from; it is reused
only while the new inputs compare equal (an unchanged resource or instance is usually the very same object,
which makes the comparison an identity check), so reuse can never change what generation returns.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

V = TypeVar("V")

DEFAULT_LIMIT = 200_000
"""Slots kept at most; past it the store starts empty again (a pass then simply computes everything)."""


class Reuse:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._slots: dict[Hashable, tuple[tuple[Any, ...], Any]] = {}
        self._generations: dict[Hashable, tuple[tuple[Any, ...], int]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, inputs: tuple[Any, ...], compute: Callable[[], V]) -> V:
        """The result kept under `key` if it was computed from equal `inputs`, else `compute()` (then kept)."""
        slot = self._slots.get(key)
        if slot is not None and slot[0] == inputs:
            self.hits += 1
            return cast(V, slot[1])
        self.misses += 1
        value = compute()
        if len(self._slots) >= self._limit:
            self._slots.clear()
        self._slots[key] = (inputs, value)
        return value

    def generation(self, key: Hashable, value: tuple[Any, ...]) -> int:
        """A number that stays the same while `value` compares equal to the last one given under `key`, and
        changes when it does not: one comparison per pass stands in for `value` in many slots' inputs."""
        last = self._generations.get(key)
        if last is not None and last[0] == value:
            return last[1]
        number = last[1] + 1 if last is not None else 0
        self._generations[key] = (value, number)
        return number
