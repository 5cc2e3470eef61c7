"""After the push: how long a change takes to reach the proxies, read from their ACKs in PROXY_STATUS_BUCKET.

A push hands over the proxies it wrote a new version to and when the change behind it was first observed
(the debouncer's first event). Each proxy's ACK of that version observes `pilot_proxy_convergence_seconds`;
when every proxy of that push has ACKed, `pilot_convergence_seconds` observes the whole. A NACK counts in
`pilot_proxy_nacks` and means that push never converges; a newer version for a proxy supersedes the older
expectation. ACKs can arrive before the push finishes writing every proxy, so the latest ACK of each proxy
is remembered and matched when the expectation is registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from services.pilot.backoff import Backoff
from services.pilot.metrics import PilotMetrics
from services.pilot.snapshot import Snapshot
from shared.bus.codec import Ack
from shared.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)


@dataclass
class _Push:
    observed_at: float
    waiting: set[str] = field(default_factory=set)
    nacked: bool = False


class Convergence:
    """Matches pushed versions with ACKs; a PushListener fed by an AckWatch."""

    def __init__(self, metrics: PilotMetrics, clock: Clock = SYSTEM_CLOCK) -> None:
        self._metrics = metrics
        self._clock = clock
        self._expected: dict[str, tuple[str, _Push]] = {}
        self._latest: dict[str, tuple[str, bool, float]] = {}
        self.converged: list[float] = []
        """Convergence times of finished pushes (the last 1,000), for tests and the benchmark."""

    async def pushed(self, snapshot: Snapshot, observed_at: float, written: dict[str, str]) -> None:
        del snapshot
        if not written:
            return
        push = _Push(observed_at)
        for key, version in written.items():
            previous = self._expected.pop(key, None)
            if previous is not None:
                self._drop(key, previous[1])
            push.waiting.add(key)
            self._expected[key] = (version, push)
        for key, version in written.items():
            latest = self._latest.get(key)
            if latest is not None and latest[0] == version:
                self._answer(key, version, latest[1], latest[2])
        self._metrics.proxies_pending.set(len(self._expected))

    def _drop(self, key: str, push: _Push) -> None:
        push.waiting.discard(key)
        push.nacked = True  # superseded before it converged: it never will

    def ack(self, key: str, ack: Ack, live: bool = True) -> None:
        """One status value; `live` False for values replayed when the watch (re)starts (counted no NACK)."""
        now = self._clock.monotonic()
        self._latest[key] = (ack.version, ack.accepted, now)
        if not ack.accepted and live:
            self._metrics.nacks.inc()
        self._answer(key, ack.version, ack.accepted, now)
        self._metrics.proxies_pending.set(len(self._expected))

    def forget(self, key: str) -> None:
        self._latest.pop(key, None)
        expected = self._expected.pop(key, None)
        if expected is not None:
            self._drop(key, expected[1])

    def _answer(self, key: str, version: str, accepted: bool, at: float) -> None:
        expected = self._expected.get(key)
        if expected is None or expected[0] != version:
            return
        del self._expected[key]
        push = expected[1]
        push.waiting.discard(key)
        if not accepted:
            push.nacked = True
            return
        self._metrics.proxy_convergence.observe(max(at - push.observed_at, 0.0))
        if not push.waiting and not push.nacked:
            took = max(at - push.observed_at, 0.0)
            self._metrics.convergence.observe(took)
            self.converged = [*self.converged[-999:], took]


class AckWatch:
    """Follows PROXY_STATUS_BUCKET, handing each proxy's Ack to `on_ack(key, ack, live)`; restarts on failure."""

    def __init__(self, kv: KeyValue, on_ack: Callable[[str, Ack, bool], None], clock: Clock = SYSTEM_CLOCK) -> None:
        self._kv = kv
        self._on_ack = on_ack
        self._clock = clock
        self._watcher: KeyValue.KeyWatcher | None = None

    async def run(self) -> None:
        backoff = Backoff(self._clock)
        while True:
            try:
                await self._watch(backoff)
            except Exception as err:
                log.warning("ack watch failed (%s); retrying", err)
            await backoff.sleep()

    async def resync(self) -> None:
        """After a NATS reconnect: stop the watch so `run` starts it again with a replay."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _watch(self, backoff: Backoff) -> None:
        watcher = self._watcher = await self._kv.watchall()
        live = False
        try:
            async for entry in watcher:
                if entry is None:
                    live = True
                    backoff.reset()
                    continue
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    continue
                try:
                    ack = Ack.from_json(entry.value)
                except ValueError as err:
                    log.warning("proxy status %s: unreadable ack skipped: %s", entry.key, err)
                    continue
                self._on_ack(entry.key, ack, live)
                await asyncio.sleep(0)
        finally:
            if self._watcher is watcher:
                self._watcher = None
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]
