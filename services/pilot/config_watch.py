"""Config input: a watch on the accepted-config KV bucket, kept as the current set of resources.

Galley writes each accepted resource under `config_key(kind, namespace, name)` as the JSON of
`dump_resource(resource)`; a delete or purge removes it. A value that does not parse is logged and
skipped, and the key keeps its last good resource (dropping, say, a DENY policy would open access).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import ValidationError

from services.pilot.metrics import PilotMetrics
from shared.model import Resource, UnknownKind, parse_resource

log = logging.getLogger(__name__)


class ConfigWatch:
    def __init__(self, kv: KeyValue, on_change: Callable[[], None], metrics: PilotMetrics) -> None:
        self._kv = kv
        self._on_change = on_change
        self._metrics = metrics
        self._resources: dict[str, Resource] = {}
        self.synced = asyncio.Event()
        """Set once every value stored when the watch started has been read."""

    def current(self) -> list[Resource]:
        return list(self._resources.values())

    def apply(self, key: str, value: bytes | None, operation: str | None) -> bool:
        """Fold one KV update into the resources; True when they changed."""
        if operation in (KV_DEL, KV_PURGE):
            return self._resources.pop(key, None) is not None
        try:
            resource = parse_resource(json.loads(value or b""))
        except (ValueError, UnknownKind, ValidationError) as err:
            self._metrics.config_rejected.inc()
            log.warning("config %s: value skipped, it is not a valid resource: %s", key, err)
            return False
        if self._resources.get(key) == resource:
            return False
        self._resources[key] = resource
        return True

    async def run(self) -> None:
        """Watch the bucket until cancelled."""
        watcher = await self._kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    if not self.synced.is_set():
                        log.info("config watch synced: %d resources", len(self._resources))
                        self.synced.set()
                        self._on_change()
                    continue
                if self.apply(entry.key, entry.value, entry.operation) and self.synced.is_set():
                    self._on_change()
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
