"""How the sidecar calls its app on one workload port: where, through which pools, under which limits.

Where: the applying Sidecar's ingress listener for the port gives `defaultEndpoint` (`127.0.0.1:PORT` and
`[::1]:PORT` on loopback, `0.0.0.0:PORT` and `[::]:PORT` at the instance's registered address, `unix:///PATH`
a Unix domain socket); without one, 127.0.0.1 and the app port. Limits: the listener's `connectionPool`, else
the Sidecar's `inboundConnectionPool`, read as Envoy reads an inbound cluster's circuit breakers: at most
`tcp.maxConnections` calls to the app at once (each HTTP/1.1 call holds a connection; further ones wait), at
most `http.http1MaxPendingRequests` waiting and `http.http2MaxRequests` in flight; a request beyond them is
answered 503 with flag UO at once, never queued. A TCP port takes at most `tcp.maxConnections` connections;
the next is closed at once. `tcp.connectTimeout` and `http.idleTimeout` set the pools' connect and idle
timeouts.

An `AppSide` is made per settings value: a config that changes them gets a new one (new pools), while requests
already under way finish on the one they started with.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from services.proxy.circuit_breaker import UNLIMITED, CircuitBreaker, Limits
from services.proxy.h1client import LeanPool
from shared.model.proxy_config import AppPort, ProxyConfig
from shared.model.sidecar import app_address, unix_socket_of

if TYPE_CHECKING:
    from services.proxy.h2client import H2Pool

CONNECT_TIMEOUT = 10.0
IDLE_TIMEOUT = 15.0
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class AppCallSettings:
    host: str
    port: int
    connect_timeout: float = CONNECT_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    limits: Limits | None = None
    """None: no limit at all (the usual case, which keeps the immediate path)."""
    unix_path: str | None = None
    """The app's Unix domain socket (host and port then unused)."""

    @classmethod
    def default(cls, app_port: int) -> AppCallSettings:
        return cls(LOOPBACK, app_port)

    @classmethod
    def of(cls, entry: AppPort, instance_address: str) -> AppCallSettings:
        endpoint = entry.default_endpoint
        unix_path = unix_socket_of(endpoint) if endpoint is not None else None
        host, port = (
            app_address(endpoint, instance_address)
            if endpoint is not None and unix_path is None
            else (LOOPBACK, entry.port)
        )
        pool = entry.connection_pool
        tcp = pool.tcp if pool is not None else None
        http = pool.http if pool is not None else None
        connect_timeout = tcp.connect_timeout if tcp is not None and "connect_timeout" in tcp.model_fields_set else None
        limits = Limits.of(pool)
        return cls(
            host,
            port,
            connect_timeout if connect_timeout else CONNECT_TIMEOUT,
            http.idle_timeout if http is not None and http.idle_timeout else IDLE_TIMEOUT,
            None if limits == Limits() else limits,
            unix_path,
        )

    @classmethod
    def current(cls, config: ProxyConfig | None, app_port: int, instance_address: str) -> AppCallSettings:
        """The settings of `app_port` under `config` (the defaults before any config)."""
        if config is None:
            return cls.default(app_port)
        return cls.of(config.inbound.app_port(app_port), instance_address)

    @property
    def max_connections(self) -> int:
        """0: unlimited."""
        limit = self.limits.max_connections if self.limits is not None else UNLIMITED
        return 0 if limit == UNLIMITED else limit

    @property
    def address(self) -> str:
        """Where the app is called, for logs and telemetry."""
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


PROBE_TIMEOUT = 0.8
"""Under Consul's check timeout (1 s): a probe answers before the agent gives up on it."""


async def probe(settings: AppCallSettings) -> str | None:
    """Connect to where the app is called and close again: None when it accepts, else why not (the sidecar's
    `/app-health/<port>`, Consul's app check, follows the Sidecar ingress's defaultEndpoint this way)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            if settings.unix_path is not None:
                _, writer = await asyncio.open_unix_connection(settings.unix_path)
            else:
                _, writer = await asyncio.open_connection(settings.host, settings.port)
    except (OSError, TimeoutError) as err:
        return f"{settings.address}: {err or 'timeout'}"
    writer.close()
    return None


class AppSide:
    """The pools and the admission count of one `AppCallSettings`."""

    def __init__(self, settings: AppCallSettings, app_port: int, http2: bool) -> None:
        self.settings = settings
        unix_path = settings.unix_path
        self.base_url = "http://localhost" if unix_path is not None else f"http://{settings.address}"
        self.pool = LeanPool(
            settings.host, settings.port, None, settings.connect_timeout, settings.idle_timeout, unix_path=unix_path
        )
        """Requests without a body (or with one in memory) go to the app through the lean client."""
        self.h2: H2Pool | None = None
        if http2:
            from services.proxy.h2client import H2Pool  # only sidecars in front of an HTTP/2 app load h2

            self.h2 = H2Pool(
                settings.host,
                settings.port,
                None,
                settings.connect_timeout,
                idle_timeout=settings.idle_timeout,
                unix_path=unix_path,
            )
        limits = settings.limits
        self.breaker = CircuitBreaker(f"inbound|{app_port}||", limits) if limits is not None else None
        max_connections = settings.max_connections
        self.slots = asyncio.Semaphore(max_connections) if max_connections and not http2 else None
        """Calls holding an HTTP/1.1 connection to the app (tcp.maxConnections); the rest wait (pending)."""
        self._session: aiohttp.ClientSession | None = None
        self.in_flight = 0
        """Calls under way through `session` or `h2` (closed only once they are done, after `retire`)."""
        self._retired = False
        self._closing: asyncio.Task[None] | None = None

    @property
    def direct(self) -> bool:
        """Whether a request may go to the app from the front's callbacks: HTTP/1.1 and nothing to count."""
        return self.h2 is None and self.breaker is None

    def session(self) -> aiohttp.ClientSession:
        """aiohttp's client, for streamed request bodies."""
        if self._session is None:
            limit = self.settings.max_connections
            unix_path = self.settings.unix_path
            connector = (
                aiohttp.UnixConnector(unix_path, limit=limit)
                if unix_path is not None
                else aiohttp.TCPConnector(limit=limit)
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout),
            )
        return self._session

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if self._retired and self.in_flight == 0:
            self._close_soon()

    def retire(self) -> None:
        """Replaced by newer settings: idle connections close now, the rest once the calls under way are done."""
        self._retired = True
        self.pool.close()
        if self.in_flight == 0:
            self._close_soon()

    def _close_soon(self) -> None:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.close())

    async def close(self) -> None:
        self.pool.close()
        if self.h2 is not None:
            self.h2.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
