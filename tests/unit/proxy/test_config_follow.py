"""Following the config key by subscription plus reads: writes the subscription misses are still applied soon."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.js.errors

from services.proxy.config_watch import ConfigWatcher
from services.proxy.snapshot import ProxyState
from shared.clock import FakeClock
from shared.model.proxy_config import ProxyConfig

PROXY_ID = "web-default-node-15006"


def _config(service: str) -> bytes:
    return ProxyConfig(proxy_id=PROXY_ID, service=service, namespace="default").versioned().to_json()


@dataclass
class Entry:
    value: bytes | None
    revision: int
    operation: str | None = None


@dataclass
class Bucket:
    """A KV bucket whose reads return `reads` in turn (the last one from then on)."""

    reads: list[Entry | None] = field(default_factory=list)
    puts: list[bytes] = field(default_factory=list)

    async def get(self, key: str) -> Entry:
        entry = self.reads.pop(0) if len(self.reads) > 1 else self.reads[0] if self.reads else None
        if entry is None:
            raise nats.js.errors.KeyNotFoundError
        return entry

    async def put(self, key: str, value: bytes) -> int:
        self.puts.append(value)
        return len(self.puts)


@dataclass
class Bus:
    configs: Bucket
    status: Bucket = field(default_factory=Bucket)
    callbacks: list[Callable[[Any], Awaitable[None]]] = field(default_factory=list)

    async def key_value(self, bucket: str) -> Bucket:
        return self.configs if "config" in bucket else self.status

    async def subscribe(self, subject: str, cb: Callable[[Any], Awaitable[None]]) -> Any:
        self.callbacks.append(cb)
        return self

    async def unsubscribe(self) -> None:
        pass

    async def publish(self, value: bytes) -> None:
        for callback in self.callbacks:
            await callback(type("Msg", (), {"headers": None, "data": value})())


async def _until(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.01)


def _running(state: ProxyState) -> str | None:
    return state.snapshot.config.service if state.snapshot is not None else None


async def test_a_write_stored_just_after_the_first_read_is_applied_without_its_message(tmp_path: Path) -> None:
    # The write reached the server before the subscription (no message) and was stored after the first read.
    bus = Bus(Bucket(reads=[None, Entry(_config("first"), 1)]))
    state = ProxyState()
    watcher = ConfigWatcher(PROXY_ID, state, tmp_path, FakeClock(), random.Random(1))
    task = asyncio.create_task(watcher._follow_once(bus, bus))  # type: ignore[arg-type]
    try:
        await _until(lambda: _running(state) == "first", 3.0, "the stored config applied by a second read")
    finally:
        task.cancel()


async def test_a_read_older_than_a_message_does_not_roll_the_config_back(tmp_path: Path) -> None:
    first, second = _config("first"), _config("second")
    bus = Bus(Bucket(reads=[None]))
    state = ProxyState()
    watcher = ConfigWatcher(PROXY_ID, state, tmp_path, FakeClock(), random.Random(1))
    task = asyncio.create_task(watcher._follow_once(bus, bus))  # type: ignore[arg-type]
    try:
        await _until(lambda: bool(bus.callbacks), 3.0, "the subscription")
        await bus.publish(first)
        bus.configs.reads = [Entry(first, 1)]  # stored
        await bus.publish(second)  # its message arrives before the stream has stored it
        await _until(lambda: _running(state) == "second", 3.0, "the second config from its message")
        await _until(lambda: watcher._superseded is None, 3.0, "a read while the store still holds the first")
        assert _running(state) == "second"
    finally:
        task.cancel()
