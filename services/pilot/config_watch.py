"""Config input: a watch on the accepted-config KV bucket, kept as the current set of resources.

Galley writes each accepted resource under `config_key(kind, namespace, name)` as the JSON of
`dump_resource(resource)`; a delete or purge removes it. A value that does not parse is logged and
skipped, and the key keeps its last good resource (dropping, say, a DENY policy would open access).
If the watch fails, or NATS reconnects (resync), it is started again after a backoff; the replay builds a
fresh set of resources that replaces the old one whole once complete, so keys deleted meanwhile disappear.

"Complete" means every value stored when the watch started has arrived: nats-py's watcher can send its end
of replay marker before the first value when the values arrive while it is being set up, and a replay
taken as complete then would be empty (dropping every policy). So the bucket's last stream sequence is read
before the watch starts, and the replay ends at the marker only once a value at or past that sequence has
arrived; after an early marker it ends with the value that reaches it. Should that value never come (a
stream whose tail was purged by hand), the replay ends EARLY_END_GRACE seconds after the marker, with a
warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import ValidationError

from services.pilot.backoff import Backoff
from services.pilot.metrics import PilotMetrics
from shared.clock import SYSTEM_CLOCK, Clock
from shared.model import Resource, UnknownKind, parse_resource

log = logging.getLogger(__name__)

EARLY_END_GRACE = 5.0
"""Seconds a replay whose end marker came early waits for the values stored before the watch started."""


class ConfigWatch:
    def __init__(
        self,
        kv: KeyValue,
        on_change: Callable[[], None],
        metrics: PilotMetrics,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._kv = kv
        self._on_change = on_change
        self._metrics = metrics
        self._clock = clock
        self._resources: dict[str, Resource] = {}
        self._watcher: KeyValue.KeyWatcher | None = None
        self.synced = asyncio.Event()
        """Set once every value stored when the watch started has been read."""

    def current(self) -> list[Resource]:
        return list(self._resources.values())

    def apply(self, resources: dict[str, Resource], key: str, value: bytes | None, operation: str | None) -> bool:
        """Fold one KV update into `resources`; True when they changed."""
        if operation in (KV_DEL, KV_PURGE):
            return resources.pop(key, None) is not None
        try:
            resource = parse_resource(json.loads(value or b""))
        except (ValueError, UnknownKind, ValidationError) as err:
            self._metrics.config_rejected.inc()
            log.warning("config %s: value skipped, it is not a valid resource: %s", key, err)
            last_good = self._resources.get(key)
            if last_good is not None and resources is not self._resources:
                resources[key] = last_good
            return False
        if resources.get(key) == resource:
            return False
        resources[key] = resource
        return True

    async def run(self) -> None:
        """Watch the bucket until cancelled, starting the watch again when it fails."""
        backoff = Backoff(self._clock)
        while True:
            try:
                await self._watch(backoff)
            except Exception as err:
                log.warning("config watch failed (%s); keeping the last resources, retrying", err)
            await backoff.sleep()

    async def resync(self) -> None:
        """Start the watch again with a full replay (after a NATS reconnect, the old one may have stalled)."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            log.info("config watch: starting again after a reconnect")
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _watch(self, backoff: Backoff) -> None:
        stored = (await self._kv.status()).stream_info.state.last_seq
        watcher = self._watcher = await self._kv.watchall()
        updates = aiter(watcher)
        replay: dict[str, Resource] | None = {}
        seen = 0
        marker = False
        try:
            while True:
                waiting = replay is not None and marker  # the end marker came before the stored values
                try:
                    entry = await asyncio.wait_for(anext(updates), EARLY_END_GRACE if waiting else None)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    log.warning(
                        "config watch: no value at or past sequence %d arrived after the end of the replay; "
                        "taking the %d resources read as complete",
                        stored,
                        len(replay or {}),
                    )
                    entry, seen = None, stored
                if entry is None:
                    marker = True
                else:
                    seen = max(seen, entry.revision or 0)
                    target = replay if replay is not None else self._resources
                    if self.apply(target, entry.key, entry.value, entry.operation) and replay is None:
                        self._on_change()
                if replay is not None and marker and seen >= stored:
                    self._swap(replay)
                    replay = None
                    backoff.reset()
        finally:
            if self._watcher is watcher:
                self._watcher = None
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]

    def _swap(self, replay: dict[str, Resource]) -> None:
        changed = replay != self._resources
        self._resources = replay
        if not self.synced.is_set():
            log.info("config watch synced: %d resources", len(replay))
            self.synced.set()
            self._on_change()
        elif changed:
            self._on_change()
