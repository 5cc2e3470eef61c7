"""After the push: proxy keys of instances gone from the catalog for longer than a grace period are deleted.

A proxy whose instance left the catalog (clean deregistration, or Consul removing it after its checks stayed
critical) keeps its key in PROXY_CONFIG_BUCKET and PROXY_STATUS_BUCKET until it has been missing from
every snapshot for `grace` seconds; then both are deleted, so `isthmus proxy-status` forgets it. A proxy
that comes back within the grace period finds its key untouched; one that comes back later gets a fresh
write. Only keys seen missing by this pilot since it started count, so a restarted pilot waits a full grace
period again. Runs after each push and every `interval` seconds. Several pilots may delete the same key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from services.pilot.metrics import PilotMetrics
from services.pilot.snapshot import Snapshot
from shared.bus.names import proxy_key
from shared.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

DEFAULT_GRACE = 300.0


KEYS_TIMEOUT = 10.0
"""A key listing (a watcher over the bucket) that has not ended by then is given up for this round."""


async def kv_keys(kv: KeyValue) -> set[str]:
    """The bucket's keys; raises TimeoutError when the listing does not end within KEYS_TIMEOUT seconds."""
    try:
        async with asyncio.timeout(KEYS_TIMEOUT):
            return set(await kv.keys())
    except NoKeysError:
        return set()


class ProxyKeyCollector:
    def __init__(
        self,
        config_kv: KeyValue,
        status_kvs: Sequence[KeyValue],
        metrics: PilotMetrics,
        on_deleted: Sequence[Callable[[str], None]] = (),
        grace: float = DEFAULT_GRACE,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._config_kv = config_kv
        self._status_kvs = tuple(status_kvs)
        self._metrics = metrics
        self._on_deleted = tuple(on_deleted)
        self._grace = grace
        self._clock = clock
        self._missing_since: dict[str, float] = {}

    async def pushed(self, snapshot: Snapshot, observed_at: float, written: dict[str, str]) -> None:
        del observed_at, written
        await self.collect(snapshot)

    async def collect(self, snapshot: Snapshot) -> list[str]:
        """Delete the keys missing for longer than the grace period; returns them."""
        live = {proxy_key(proxy.proxy_id) for proxy in snapshot.proxies}
        try:
            missing = await kv_keys(self._config_kv) - live
            for status in self._status_kvs:
                missing |= await kv_keys(status) - live
        except TimeoutError:  # nothing is deleted on a partial view; the next round lists again
            log.warning("listing the proxy keys did not finish within %.0fs; collection skipped", KEYS_TIMEOUT)
            return []
        now = self._clock.monotonic()
        self._missing_since = {key: self._missing_since.get(key, now) for key in missing}
        deleted = sorted(key for key, since in self._missing_since.items() if now - since >= self._grace)
        for key in deleted:
            for kv in (self._config_kv, *self._status_kvs):
                await kv.delete(key)
            del self._missing_since[key]
            for callback in self._on_deleted:
                callback(key)
            self._metrics.proxy_keys_deleted.inc()
            log.info("proxy %s gone for over %.0fs: its config and status keys are deleted", key, self._grace)
        return deleted
