"""Catalog input: Consul blocking queries kept as the current set of service instances.

One long poll on /v1/catalog/services follows the service list (Consul's own "consul" service is
skipped); one long poll per service on /v1/health/service/<name> follows its instances and their
health (healthy = every check passing). Errors are retried with capped exponential backoff; while
Consul is unreachable the last known instances stay in place.

A long poll holds one connection, and a Consul agent serves at most 200 per client address by default
(limits.http_max_conns_per_client), so above `watch_limit` services (100) the watch switches to bulk
mode: two long polls only, /v1/catalog/services (any instance registered, changed or removed) and
/v1/health/state/any (any check changing state), and each wake-up re-reads every service's
/v1/health/service/<name> with at most `refresh_width` requests in flight. A service whose read fails
keeps its last instances. Back under the limit, per-service watches resume.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from services.pilot.backoff import Backoff
from services.pilot.snapshot import Instance
from shared.clock import SYSTEM_CLOCK, Clock
from shared.consul import MAX_WEIGHT
from shared.tasks import cancel_until_done

log = logging.getLogger(__name__)

SKIPPED_SERVICES = frozenset({"consul"})
DEFAULT_WATCH_LIMIT = 100
DEFAULT_REFRESH_WIDTH = 32


def consul_base_url(addr: str) -> str:
    """`host:port` or a full http(s) URL -> the base URL of the Consul HTTP API."""
    addr = addr.rstrip("/")
    return addr if addr.startswith(("http://", "https://")) else f"http://{addr}"


def next_index(previous: int, reported: str | None) -> int:
    """Consul's rules for X-Consul-Index: reset when it goes backwards, never below 1."""
    try:
        index = int(reported or 0)
    except ValueError:
        return 0
    if index < previous:
        return 0
    return max(index, 1)


def instance_from_health(entry: dict[str, Any]) -> Instance:
    """One /v1/health/service entry -> Instance; raises KeyError/TypeError/ValueError on a bad shape."""
    service, node = entry["Service"], entry["Node"]
    checks = entry.get("Checks") or []
    return Instance(
        service=str(service["Service"]),
        service_id=str(service["ID"]),
        node=str(node["Node"]),
        address=str(service.get("Address") or node["Address"]),
        port=int(service["Port"]),
        meta={str(k): str(v) for k, v in (service.get("Meta") or {}).items()},
        healthy=all(check.get("Status") == "passing" for check in checks),
        weight=_passing_weight(service.get("Weights")),
    )


def _passing_weight(weights: Any) -> int:
    """Consul's `Weights.Passing` (default 1), kept within what an endpoint's weight may be."""
    try:
        value = int(weights.get("Passing", 1)) if isinstance(weights, dict) else 1
    except (TypeError, ValueError):
        return 1
    return min(max(value, 1), MAX_WEIGHT)


class CatalogWatch:
    def __init__(
        self,
        consul_addr: str,
        on_change: Callable[[], None],
        clock: Clock = SYSTEM_CLOCK,
        wait: float = 30.0,
        watch_limit: int = DEFAULT_WATCH_LIMIT,
        refresh_width: int = DEFAULT_REFRESH_WIDTH,
    ) -> None:
        self._base = consul_base_url(consul_addr)
        self._on_change = on_change
        self._clock = clock
        self._wait = wait
        self._instances: dict[str, tuple[Instance, ...]] = {}
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._first_reads: dict[str, asyncio.Event] = {}
        self._session: aiohttp.ClientSession | None = None
        self._watch_limit = watch_limit
        self._refresh_width = refresh_width
        self._bulk_names: set[str] | None = None
        """The listed services while in bulk mode; None in per-service mode."""
        self._bulk_tasks: list[asyncio.Task[None]] = []
        self._refresh_needed = asyncio.Event()
        self._bulk_synced = asyncio.Event()
        self.synced = asyncio.Event()
        """Set once the service list and every listed service's instances have been read."""

    def current(self) -> list[Instance]:
        return [instance for instances in self._instances.values() for instance in instances]

    @property
    def service_names(self) -> list[str]:
        return sorted(self._instances)

    async def run(self) -> None:
        """Follow the catalog until cancelled."""
        timeout = aiohttp.ClientTimeout(total=self._wait * 1.2 + 10, connect=5)
        connector = aiohttp.TCPConnector(limit=self._watch_limit + self._refresh_width + 8)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._session = session
            try:
                await self._follow_services()
            finally:
                await cancel_until_done([*self._watches.values(), *self._bulk_tasks])
                self._watches.clear()
                self._bulk_tasks.clear()

    async def _get(self, path: str, index: int) -> tuple[Any, int]:
        assert self._session is not None, "query before run() opened the session"
        params = {"index": str(index), "wait": f"{int(self._wait * 1000)}ms"}
        async with self._session.get(f"{self._base}{path}", params=params) as reply:
            if reply.status != 200:
                raise aiohttp.ClientResponseError(
                    reply.request_info, (), status=reply.status, message=(await reply.text())[:200]
                )
            return await reply.json(), next_index(index, reply.headers.get("X-Consul-Index"))

    async def _follow_services(self) -> None:
        backoff = Backoff(self._clock)
        index = 0
        while True:
            try:
                listed, index = await self._get("/v1/catalog/services", index)
                names = {str(name) for name in listed} - SKIPPED_SERVICES
            except (aiohttp.ClientError, TimeoutError, ValueError, TypeError) as err:
                log.warning("consul catalog: %s; keeping the last snapshot, retrying", err or type(err).__name__)
                index = 0
                await backoff.sleep()
                continue
            backoff.reset()
            if len(names) > self._watch_limit:
                self._reconcile_bulk(names)
            else:
                self._leave_bulk(names)
                self._reconcile(names)
            if not self.synced.is_set():
                if self._bulk_names is not None:
                    await self._bulk_synced.wait()
                else:
                    await asyncio.gather(*(event.wait() for event in self._first_reads.values()))
                log.info("catalog watch synced: %d services", len(self._instances))
                self.synced.set()
                self._on_change()

    def _reconcile(self, names: set[str]) -> None:
        changed = False
        for gone in sorted(set(self._watches) - names):
            self._watches.pop(gone).cancel()
            self._first_reads.pop(gone, None)
            changed = self._instances.pop(gone, None) is not None or changed
        for new in sorted(names - set(self._watches)):
            self._first_reads[new] = asyncio.Event()
            self._watches[new] = asyncio.create_task(self._follow_service(new), name=f"consul-health-{new}")
        if changed and self.synced.is_set():
            self._on_change()

    async def _follow_service(self, name: str) -> None:
        backoff = Backoff(self._clock)
        index = 0
        path = f"/v1/health/service/{quote(name, safe='')}"
        while True:
            try:
                entries, index = await self._get(path, index)
                instances = tuple(sorted((instance_from_health(e) for e in entries), key=Instance.sort_key))
            except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, KeyError) as err:
                log.warning("consul service %s: %s; keeping its last instances", name, err or type(err).__name__)
                index = 0
                await backoff.sleep()
                continue
            backoff.reset()
            if self._watches.get(name) is not asyncio.current_task():
                return
            if self._instances.get(name) != instances:
                self._instances[name] = instances
                if self.synced.is_set():
                    self._on_change()
            self._first_reads[name].set()

    def _reconcile_bulk(self, names: set[str]) -> None:
        if self._bulk_names is None:
            log.info("consul catalog: %d services, over %d: following it in bulk", len(names), self._watch_limit)
            for task in self._watches.values():
                task.cancel()
            self._watches.clear()
            self._first_reads.clear()
            self._bulk_tasks = [
                asyncio.create_task(self._follow_health_states(), name="consul-health-states"),
                asyncio.create_task(self._refresh_loop(), name="consul-bulk-refresh"),
            ]
        self._bulk_names = names
        self._refresh_needed.set()

    def _leave_bulk(self, names: set[str]) -> None:
        if self._bulk_names is None:
            return
        self._instances = {name: found for name, found in self._instances.items() if name in names}
        log.info("consul catalog: back to one watch per service")
        for task in self._bulk_tasks:
            task.cancel()
        self._bulk_tasks.clear()
        self._bulk_names = None
        self._bulk_synced.clear()

    async def _follow_health_states(self) -> None:
        backoff = Backoff(self._clock)
        index = 0
        while True:
            try:
                _, new_index = await self._get("/v1/health/state/any", index)
            except (aiohttp.ClientError, TimeoutError, ValueError) as err:
                log.warning("consul health states: %s; retrying", err or type(err).__name__)
                index = 0
                await backoff.sleep()
                continue
            backoff.reset()
            if new_index != index:
                self._refresh_needed.set()
            index = new_index

    async def _refresh_loop(self) -> None:
        while True:
            await self._refresh_needed.wait()
            self._refresh_needed.clear()
            fresh = await self._read_all(sorted(self._bulk_names or ()))
            changed = fresh != self._instances
            self._instances = fresh
            self._bulk_synced.set()
            if changed and self.synced.is_set():
                self._on_change()

    async def _read_all(self, names: list[str]) -> dict[str, tuple[Instance, ...]]:
        gate = asyncio.Semaphore(self._refresh_width)
        fresh: dict[str, tuple[Instance, ...]] = {}

        async def read(name: str) -> None:
            async with gate:
                try:
                    entries, _ = await self._get(f"/v1/health/service/{quote(name, safe='')}", 0)
                    fresh[name] = tuple(sorted((instance_from_health(e) for e in entries), key=Instance.sort_key))
                except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, KeyError) as err:
                    log.warning("consul service %s: %s; keeping its last instances", name, err or type(err).__name__)
                    if name in self._instances:
                        fresh[name] = self._instances[name]

        await asyncio.gather(*(read(name) for name in names))
        return {name: fresh[name] for name in sorted(fresh)}
