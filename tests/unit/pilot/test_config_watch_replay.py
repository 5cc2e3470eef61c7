"""pilot's config watch takes a replay as complete only once the values stored before it started have arrived,
even when the watcher's end marker comes first (as nats-py's can when values arrive during its set-up)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from services.pilot import config_watch
from services.pilot.config_watch import ConfigWatch
from services.pilot.metrics import PilotMetrics
from shared.bus.names import config_key
from shared.model import dump_resource, parse_resource


def stored_value(name: str) -> bytes:
    resource = parse_resource(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"action": "DENY", "rules": [{}]},
        }
    )
    return json.dumps(dump_resource(resource)).encode()


@dataclass
class Entry:
    key: str
    value: bytes | None
    revision: int
    operation: str | None = None


@dataclass
class Watcher:
    """Delivers a fixed sequence (None = the end-of-replay marker), then waits like a live watch."""

    updates: Sequence[Entry | None]
    stopped: bool = False

    async def _gen(self) -> AsyncIterator[Entry | None]:
        for update in self.updates:
            await asyncio.sleep(0)
            yield update
        await asyncio.Event().wait()

    def __aiter__(self) -> AsyncIterator[Entry | None]:
        return self._gen()

    async def stop(self) -> None:
        self.stopped = True


@dataclass
class Bucket:
    """The two calls ConfigWatch makes on a nats-py KeyValue: status() and watchall()."""

    last_seq: int
    updates: Sequence[Entry | None]
    watchers: list[Watcher] = field(default_factory=list)

    async def status(self) -> Any:
        return SimpleNamespace(stream_info=SimpleNamespace(state=SimpleNamespace(last_seq=self.last_seq)))

    async def watchall(self) -> Watcher:
        watcher = Watcher(self.updates)
        self.watchers.append(watcher)
        return watcher


DENY_A = Entry(config_key("AuthorizationPolicy", "shop", "a"), stored_value("a"), revision=1)
DENY_B = Entry(config_key("AuthorizationPolicy", "shop", "b"), stored_value("b"), revision=2)


async def synced_names(bucket: Bucket) -> tuple[list[str], list[int]]:
    changes: list[int] = []
    watch = ConfigWatch(bucket, lambda: changes.append(1), PilotMetrics())  # type: ignore[arg-type]
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.wait_for(watch.synced.wait(), 5)
        return sorted(r.metadata.name for r in watch.current()), changes
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_marker_before_the_stored_values_waits_for_them() -> None:
    names, changes = await synced_names(Bucket(last_seq=2, updates=[None, DENY_A, DENY_B]))
    assert names == ["a", "b"]
    assert changes == [1]  # one change: the complete set, never an empty one


async def test_a_marker_after_the_values_ends_the_replay_as_before() -> None:
    names, _ = await synced_names(Bucket(last_seq=2, updates=[DENY_A, DENY_B, None]))
    assert names == ["a", "b"]


async def test_an_empty_bucket_is_synced_at_the_marker() -> None:
    names, _ = await synced_names(Bucket(last_seq=0, updates=[None]))
    assert names == []


async def test_a_value_that_never_comes_ends_the_replay_after_the_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_watch, "EARLY_END_GRACE", 0.05)
    names, _ = await synced_names(Bucket(last_seq=9, updates=[None, DENY_A]))
    assert names == ["a"]
