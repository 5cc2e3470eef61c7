"""Side path of the outbound filter chain: VirtualService mirroring, fire and forget.

For each mirror of the chosen route (`mirror` + `mirrorPercentage`, or `mirrors`; no percentage: every
request) the proxy sends a copy of the request to the mirror's cluster, with `-shadow` appended to the
host of the Host header (Envoy's shadow host), and drops the answer. A mirror never delays or changes the
real response: it runs as its own task, alongside the real request, bounded by the route timeout
(else MIRROR_TIMEOUT). At most MAX_IN_FLIGHT mirrors per proxy run at once; beyond that, and when the
mirror cluster's circuit breaker is full or it has no healthy endpoint, the copy is dropped (counted in
`dropped`). Only bodies the proxy holds anyway (up to outbound.MAX_REPLAY_BODY with a Content-Length)
are mirrored; a request with a larger or streamed body is not mirrored at all.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from collections.abc import Callable, Sequence

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from services.proxy.balancer import ClusterRuntime, Lease
from services.proxy.errors import ProxyError
from services.proxy.telemetry.context import for_endpoint, own_metadata
from services.proxy.upstream import UpstreamPools
from shared.model.proxy_config import MirrorCluster

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64
MIRROR_TIMEOUT = 15.0
SHADOW_SUFFIX = "-shadow"


def shadow_host(authority: str) -> str:
    """`reviews` -> `reviews-shadow`; `reviews:9080` -> `reviews-shadow:9080`."""
    if authority.startswith("["):
        end = authority.find("]")
        return authority[: end + 1] + SHADOW_SUFFIX + authority[end + 1 :]
    name, sep, port = authority.rpartition(":")
    if sep and port.isdigit():
        return f"{name}{SHADOW_SUFFIX}:{port}"
    return authority + SHADOW_SUFFIX


def chosen(mirrors: Sequence[MirrorCluster], rng: random.Random) -> list[MirrorCluster]:
    """The mirrors this request goes to, each drawn against its percentage."""
    return [m for m in mirrors if m.percentage is None or rng.random() * 100.0 < m.percentage.value]


def _releaser(lease: Lease) -> Callable[[asyncio.Task[None]], None]:
    def release(_: asyncio.Task[None]) -> None:
        lease.release()

    return release


class Mirrors:
    """Sends request copies to mirror clusters in background tasks, bounded in number."""

    def __init__(self, pools: UpstreamPools, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self._pools = pools
        self._max = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.dropped = 0

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def send(
        self,
        runtime_of: Callable[[str], ClusterRuntime],
        targets: Sequence[MirrorCluster],
        method: str,
        path: str,
        headers: CIMultiDict[str],
        body: bytes | None,
        timeout: float | None,
    ) -> None:
        """Start one background copy per target; returns at once."""
        own = own_metadata()
        for target in targets:
            if len(self._tasks) >= self._max:
                self.dropped += 1
                continue
            try:
                lease = Lease.take(runtime_of(target.cluster), None, frozenset())
            except ProxyError:
                self.dropped += 1
                continue
            copy = for_endpoint(CIMultiDict(headers), lease.endpoint, own)
            copy["Host"] = shadow_host(headers.get("Host", ""))
            # A fresh context: the copy is not part of the request's own telemetry.
            task = asyncio.get_running_loop().create_task(
                self._one(lease, method, path, copy, body, timeout or MIRROR_TIMEOUT), context=contextvars.Context()
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            # Released however the task ends, even cancelled before it ran.
            task.add_done_callback(_releaser(lease))

    async def _one(
        self, lease: Lease, method: str, path: str, headers: CIMultiDict[str], body: bytes | None, seconds: float
    ) -> None:
        endpoint = lease.endpoint
        pool = lease.runtime.pool
        try:
            if pool.http2(endpoint):
                await self._one_h2(lease, method, path, headers, body, seconds)
                return
            session, ssl_arg = self._pools.session_for(endpoint, lease.runtime.pool)
            scheme = "https" if ssl_arg is not False else "http"
            host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
            url = URL(f"{scheme}://{host}:{endpoint.port}{path}", encoded=True)
            async with asyncio.timeout(seconds):
                async with session.request(
                    method,
                    url,
                    headers=headers,
                    data=body,
                    ssl=ssl_arg,
                    server_hostname=self._pools.server_name(endpoint, lease.runtime.pool),
                    allow_redirects=False,
                ) as response:
                    await response.read()
                    lease.runtime.report(endpoint, response.status)
            self.sent += 1
        except (TimeoutError, aiohttp.ClientError, RuntimeError, ProxyError) as err:
            log.debug("mirror to %s failed: %s", lease.runtime.name, err)
            lease.runtime.report(endpoint, None)

    async def _one_h2(
        self, lease: Lease, method: str, path: str, headers: CIMultiDict[str], body: bytes | None, seconds: float
    ) -> None:
        endpoint = lease.endpoint
        pool = lease.runtime.pool
        context = self._pools.h2_context_for(endpoint, pool)
        async with asyncio.timeout(seconds):
            response = await self._pools.h2_for(endpoint, pool).request(method, path, headers, body, context)
            try:
                await response.content.read()
            finally:
                response.release()
        lease.runtime.report(endpoint, response.status)
        self.sent += 1

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
