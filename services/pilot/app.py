"""Pilot's wiring: NATS KV and Consul watches feed the debouncer, the pusher writes proxy configs.

Order of a start: connect NATS (buckets created if missing), start both watches and the debug server,
wait until both watches have synced ("pilot ready"), then push on every debounced change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from services.pilot.catalog_watch import CatalogWatch
from services.pilot.config_watch import ConfigWatch
from services.pilot.convergence import AckWatch, Convergence
from services.pilot.debounce import DEFAULT_MAX_DELAY, DEFAULT_QUIET, Debouncer
from services.pilot.gc import DEFAULT_GRACE, ProxyKeyCollector
from services.pilot.metrics import PilotMetrics
from services.pilot.push import KvProxyConfigStore, Pusher
from services.pilot.reuse import Reuse
from services.pilot.server import DebugServer, build_app
from services.pilot.snapshot import Snapshot
from shared.bus.names import CONFIG_BUCKET, PROXY_CONFIG_BUCKET, PROXY_STATUS_BUCKET
from shared.clock import SYSTEM_CLOCK, Clock
from shared.ports import DEFAULT_CONSUL_ADDR, DEFAULT_NATS_URL, DEFAULT_TRUST_DOMAIN, PILOT_DEBUG
from shared.tasks import cancel_until_done

log = logging.getLogger(__name__)

DEFAULT_ROOT_NAMESPACE = "isthmus-system"


@dataclass(frozen=True)
class PilotSettings:
    nats_url: str = DEFAULT_NATS_URL
    consul_addr: str = DEFAULT_CONSUL_ADDR
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    root_namespace: str = DEFAULT_ROOT_NAMESPACE
    listen: str = f"127.0.0.1:{PILOT_DEBUG}"
    consul_wait: float = 30.0
    quiet: float = DEFAULT_QUIET
    max_delay: float = DEFAULT_MAX_DELAY
    proxy_grace: float = DEFAULT_GRACE
    """Seconds a proxy's instance may be missing from the catalog before its keys are deleted."""


async def open_bucket(js: JetStreamContext, bucket: str) -> KeyValue:
    """The bucket, created with default settings if nobody has created it yet."""
    try:
        return await js.key_value(bucket)
    except (BucketNotFoundError, NotFoundError):
        pass
    try:
        return await js.create_key_value(bucket=bucket)
    except Exception:  # another process created it meanwhile, with its own settings
        return await js.key_value(bucket)


class Pilot:
    def __init__(self, settings: PilotSettings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.metrics = PilotMetrics()
        self.debouncer = Debouncer(clock, settings.quiet, settings.max_delay)
        self.ready = asyncio.Event()
        self._clock = clock
        self._nc: NATS | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.catalog = CatalogWatch(settings.consul_addr, self.debouncer.notify, clock, settings.consul_wait)
        self.config: ConfigWatch | None = None
        self.pusher: Pusher | None = None
        self.convergence = Convergence(self.metrics, clock)
        self.acks: AckWatch | None = None
        self._reuse = Reuse()
        """Generation results carried from one snapshot to the next (only unchanged inputs reuse them)."""
        self.collector: ProxyKeyCollector | None = None
        self.server = DebugServer(build_app(self.ready.is_set, self._versions, self.metrics), settings.listen)

    async def _reconnected(self) -> None:
        if self.config is not None:
            await self.config.resync()
        if self.acks is not None:
            await self.acks.resync()
        self.debouncer.notify()

    def _versions(self) -> dict[str, str]:
        return dict(self.pusher.versions) if self.pusher else {}

    def snapshot(self) -> Snapshot:
        """The current state of both watches as one immutable snapshot."""
        resources = self.config.current() if self.config else []
        return Snapshot.build(resources, self.catalog.current(), self._reuse)

    async def start(self) -> None:
        self._nc = await nats.connect(
            self.settings.nats_url,
            name="isthmus-pilot",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            reconnected_cb=self._reconnected,
        )
        js = self._nc.jetstream()
        config_kv = await open_bucket(js, CONFIG_BUCKET)
        proxy_kv = await open_bucket(js, PROXY_CONFIG_BUCKET)
        status_kv = await open_bucket(js, PROXY_STATUS_BUCKET)
        self.config = ConfigWatch(config_kv, self.debouncer.notify, self.metrics, self._clock)
        self.acks = AckWatch(status_kv, self.convergence.ack, self._clock)
        self.collector = ProxyKeyCollector(
            proxy_kv,
            [status_kv],
            self.metrics,
            on_deleted=[self._forget],
            grace=self.settings.proxy_grace,
            clock=self._clock,
        )
        self.pusher = Pusher(
            KvProxyConfigStore(proxy_kv),
            self.snapshot,
            self.debouncer,
            self.metrics,
            self.settings.trust_domain,
            self.settings.root_namespace,
            self._clock,
            listeners=[self.convergence, self.collector],
        )
        await self.server.start()
        self._spawn(self.config.run(), "pilot-config-watch")
        self._spawn(self.catalog.run(), "pilot-catalog-watch")
        self._spawn(self._push_when_ready(), "pilot-push")
        self._spawn(self.acks.run(), "pilot-ack-watch")

    def _forget(self, key: str) -> None:
        self.convergence.forget(key)
        if self.pusher is not None:
            self.pusher.forget(key)

    async def _collect_garbage(self) -> None:
        """Between pushes too: a gone proxy's grace period ends whether or not anything else changes."""
        assert self.collector is not None and self.pusher is not None, "collector loop started before start()"
        interval = min(max(self.settings.proxy_grace / 4, 0.05), 30.0)
        while True:
            await self._clock.sleep(interval)
            try:
                await self.collector.collect(self.pusher.snapshot)
            except Exception as err:
                log.warning("proxy key collection failed (%s); retrying", err)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    @staticmethod
    def _task_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("pilot task %s stopped", task.get_name(), exc_info=task.exception())

    async def _push_when_ready(self) -> None:
        assert self.config is not None and self.pusher is not None, "push loop started before start()"
        await asyncio.gather(self.config.synced.wait(), self.catalog.synced.wait())
        self.ready.set()
        log.info("pilot ready")
        self.debouncer.notify()
        self._spawn(self._collect_garbage(), "pilot-proxy-key-collector")
        await self.pusher.run()

    async def stop(self) -> None:
        await cancel_until_done(self._tasks)
        self._tasks.clear()
        await self.server.stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None
