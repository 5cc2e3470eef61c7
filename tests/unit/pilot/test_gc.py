"""Proxy key collection never deletes on a partial view: a key listing that does not end skips the round."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.pilot import gc
from services.pilot.gc import ProxyKeyCollector
from services.pilot.metrics import PilotMetrics
from services.pilot.snapshot import Snapshot
from shared.clock import FakeClock


class StuckBucket:
    """A bucket whose key listing never ends; deleting from it fails the test."""

    async def keys(self) -> list[str]:
        await asyncio.Event().wait()
        return []

    async def delete(self, key: str) -> None:
        raise AssertionError(f"deleted {key} without a complete listing")


async def test_a_listing_that_does_not_end_skips_the_round(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc, "KEYS_TIMEOUT", 0.05)
    bucket: Any = StuckBucket()
    collector = ProxyKeyCollector(bucket, [bucket], PilotMetrics(), grace=0.0, clock=FakeClock())
    assert await collector.collect(Snapshot.build([], [])) == []
