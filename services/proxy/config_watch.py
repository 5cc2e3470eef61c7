"""Control-plane input: pilot's ProxyConfig from NATS KV -> validated snapshot swap, last-known-good file, ACK/NACK.

The proxy follows its key with a plain NATS subscription on the key's KV subject, whose messages carry the
value written (in publish order), and reads the stored value with a direct get at start, after a reconnect,
a few times soon after subscribing (kv.recheck_delays) and then every RESYNC_INTERVAL: no JetStream consumer
per proxy (a stream serves at most 1,000 consumers, so one KV watch per proxy would cap the mesh near 1,000
proxies). A message can reach subscribers before the stream has stored it, which is why it is applied from
its own bytes rather than re-read, and why a read returning the value a message just replaced is skipped
once. Identical bytes are applied once; a get older than the last one read is ignored; a delete keeps the
running config.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
from pathlib import Path

import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from services.proxy.kv import (
    KV_OPERATION_HEADER,
    ensure_bucket,
    kv_subject,
    next_update,
    recheck_delays,
    stop_watcher,
)
from services.proxy.snapshot import ConfigSnapshot, ProxyState
from shared.bus.codec import Ack
from shared.bus.names import PROXY_CONFIG_BUCKET, PROXY_STATUS_BUCKET, proxy_key
from shared.clock import Clock
from shared.model.proxy_config import ProxyConfig

log = logging.getLogger(__name__)

LAST_CONFIG_FILE = "last-config.json"
RESYNC_INTERVAL = 30.0
"""A quiet watch is cross-checked against the stored value this often, in case the watch was lost."""
RETRY_MAX = 10.0


class ConfigWatcher:
    """Applies each config pilot writes for this proxy; rejected configs leave the running snapshot in place."""

    def __init__(
        self,
        proxy_id: str,
        state: ProxyState,
        state_dir: Path,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self.proxy_id = proxy_id
        self.key = proxy_key(proxy_id)
        self._state = state
        self._state_dir = state_dir
        self._clock = clock
        self._rng = rng
        self._last_revision: int | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._pokes: asyncio.Queue[bytes | None] | None = None
        self._last_value: bytes | None = None
        self._superseded: bytes | None = None
        """The value a message just replaced: a read may still return it (stored after the message was routed)
        and is then skipped, once."""
        self.applied = asyncio.Event()
        """Set after the first config (from disk or the bus) is in place."""

    @property
    def last_config_path(self) -> Path:
        return self._state_dir / LAST_CONFIG_FILE

    def load_last_known_good(self) -> bool:
        """Serve the persisted config before the bus answers; a broken file is logged and ignored."""
        path = self.last_config_path
        if not path.is_file():
            return False
        try:
            config = ProxyConfig.from_json(path.read_bytes())
            self._swap(config)
        except (OSError, ValueError) as err:
            log.warning("ignoring %s: %s", path, err)
            return False
        log.info("loaded last-known-good config version %s from %s", config.version, path)
        return True

    def apply(self, raw: bytes) -> Ack:
        """Parse, build and swap one config; the Ack says what happened and which version now runs."""
        previous = self._state.snapshot.version if self._state.snapshot else ""
        try:
            config = ProxyConfig.from_json(raw)
            if config.proxy_id != self.proxy_id:
                raise ValueError(f"proxyId {config.proxy_id!r} is not this proxy ({self.proxy_id!r})")
            if not config.version:
                config = config.versioned()
            self._swap(config)
        except ValueError as err:
            version = _version_hint(raw)
            log.warning("rejected config %s: %s", version or "(unparsable)", err)
            return Ack(
                proxy_id=self.proxy_id,
                version=version,
                accepted=False,
                error=str(err),
                applied_version=previous,
                timestamp=self._clock.wall(),
            )
        self._persist(config)
        log.info("applied config version %s", config.version)
        return Ack(
            proxy_id=self.proxy_id,
            version=config.version,
            accepted=True,
            applied_version=config.version,
            timestamp=self._clock.wall(),
        )

    def _swap(self, config: ProxyConfig) -> None:
        self._state.swap(ConfigSnapshot.build(config, self._rng))
        self.applied.set()

    def _persist(self, config: ProxyConfig) -> None:
        try:
            self._state_dir.mkdir(parents=True, exist_ok=True)
            temporary = self.last_config_path.with_suffix(".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(config.to_json())
            os.replace(temporary, self.last_config_path)
        except OSError as err:
            log.warning("could not persist config to %s: %s", self.last_config_path, err)

    async def run(self, js: JetStreamContext, nc: NatsClient | None = None) -> None:
        """Follow this proxy's key forever (by subscription with `nc`, else by a KV watch), retrying after errors."""
        backoff = 0.5
        while True:
            try:
                if nc is not None:
                    await self._follow_once(js, nc)
                else:
                    await self._watch_once(js)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("config watch failed (%s); retrying in %.1fs", err, backoff)
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX)
            else:
                backoff = 0.5

    async def _follow_once(self, js: JetStreamContext, nc: NatsClient) -> None:
        configs = await ensure_bucket(js, PROXY_CONFIG_BUCKET)
        status = await ensure_bucket(js, PROXY_STATUS_BUCKET)
        updates: asyncio.Queue[bytes | None] = asyncio.Queue()
        """Values from the subscription; None asks for a read of the stored value."""
        self._pokes = updates

        async def published(msg: Msg) -> None:
            operation = (msg.headers or {}).get(KV_OPERATION_HEADER)
            if operation is None and msg.data:
                updates.put_nowait(msg.data)

        subscription = await nc.subscribe(kv_subject(PROXY_CONFIG_BUCKET, self.key), cb=published)
        try:
            await self._resync(configs, status)  # after subscribing; read again soon, see recheck_delays
            delays = recheck_delays(RESYNC_INTERVAL)
            while True:
                try:
                    async with asyncio.timeout(next(delays)):
                        item = await updates.get()
                except TimeoutError:
                    item = None
                if item is None:
                    await self._resync(configs, status)
                else:
                    self._superseded = self._last_value if item != self._last_value else self._superseded
                    await self._handle_value(item, status)
        finally:
            if self._pokes is updates:
                self._pokes = None
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _watch_once(self, js: JetStreamContext) -> None:
        configs = await ensure_bucket(js, PROXY_CONFIG_BUCKET)
        status = await ensure_bucket(js, PROXY_STATUS_BUCKET)
        watcher = self._watcher = await configs.watch(self.key)
        try:
            while True:
                try:
                    entry = await next_update(watcher, RESYNC_INTERVAL)
                except TimeoutError:
                    await self._resync(configs, status)
                    continue
                if isinstance(entry, KeyValue.Entry):
                    await self._handle(entry, status)
                elif entry is not None:
                    return  # the watcher was stopped
        finally:
            if self._watcher is watcher:
                self._watcher = None
            with contextlib.suppress(Exception):
                await stop_watcher(watcher)

    async def resync(self) -> None:
        """After a NATS reconnect: end the current watch so `run` starts a fresh one (which replays our key);
        a watch that outlived a server restart may otherwise stay silent until the RESYNC_INTERVAL check."""
        if self._pokes is not None:
            log.info("NATS reconnected: reading the config key again")
            self._pokes.put_nowait(None)
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            log.info("NATS reconnected: watching the config key again")
            with contextlib.suppress(Exception):
                await stop_watcher(watcher)

    async def _resync(self, configs: KeyValue, status: KeyValue) -> None:
        try:
            entry = await configs.get(self.key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return
        superseded, self._superseded = self._superseded, None
        if entry.value is not None and entry.value == superseded:
            return  # read before the stream stored the newer value a message already brought
        if entry.revision is not None and self._last_revision is not None and entry.revision < self._last_revision:
            return  # older than what we read before
        if entry.revision != self._last_revision:
            await self._handle(entry, status)

    async def _handle_value(self, value: bytes, status: KeyValue) -> None:
        if value == self._last_value:
            return
        self._last_value = value
        ack = self.apply(value)
        await status.put(self.key, ack.to_json())

    async def _handle(self, entry: KeyValue.Entry, status: KeyValue) -> None:
        if entry.operation is not None or entry.value is None:
            return  # a delete or purge: keep serving what we have
        if entry.revision == self._last_revision:
            return
        self._last_revision = entry.revision
        await self._handle_value(entry.value, status)


def _version_hint(raw: bytes) -> str:
    """The version field of a config we could not accept, when it can be read at all."""
    try:
        value = json.loads(raw)
    except ValueError:
        return ""
    version = value.get("version") if isinstance(value, dict) else None
    return version if isinstance(version, str) else ""
