"""Connection pools to upstreams, per cluster: plain text for endpoints without identity, mTLS per SPIFFE ID,
and TLS origination (DestinationRule `tls.mode` SIMPLE / MUTUAL, origination.py) for endpoints without
identity in a cluster whose policy asks for it.

Each cluster's DestinationRule connectionPool shapes its pools: `tcp.connectTimeout` (default 10s) bounds
the TCP connect (expiring: a connect failure, 503 UF), `tcp.maxConnections` caps the pool (further
attempts wait for a connection; circuit_breaker.py decides how many may wait), `http.idleTimeout` closes
pooled connections idle that long (unset: 15s, shorter than Istio's 1h so that upstream servers' own idle
closes rarely race a reuse), `http.maxRequestsPerConnection` closes a connection after that many requests
(1: no keep-alive; 0 or unset: unlimited) and `tcp.maxConnectionDuration` closes a connection after the
first request it carries once it is that old. `http.h2UpgradePolicy`, `useClientProtocol` and
`maxConcurrentStreams` are accepted and have no effect: upstream connections are HTTP/1.1. A cluster
whose settings change gets a new pool; the old one drains and is closed when the proxy stops (at most
RETIRED_KEPT are kept; older ones are closed then).

A cluster's TLS origination travels in its PoolSettings: `session_for` answers its context as the `ssl`
argument (or raises origination.OriginationUnavailable when the context could not be built), the pools
check the certificate's subjectAltNames after the handshake, and `server_name` gives the SNI to request
with. Endpoints with an identity keep mesh mTLS whatever the policy says. An Origination rebuilt from
rotated files (origination.OriginationWatch) is a settings change like any other: the aiohttp session is
retired as above, and the endpoint's lean pool is closed, which closes its idle connections at once and
the busy ones when their request ends, while new requests connect with the new context.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from services.proxy.h1client import LeanPool
from services.proxy.keepalive import Keepalive
from services.proxy.origination import Origination
from services.proxy.tls import SpiffeVerifyingConnector, TlsContexts
from shared.clock import SYSTEM_CLOCK, Clock
from shared.model.destination_rule import ConnectionPoolSettings, H2UpgradePolicy
from shared.model.proxy_config import Endpoint

if TYPE_CHECKING:
    from services.proxy.h2client import H2Pool

CONNECT_TIMEOUT = 10.0
IDLE_TIMEOUT = 15.0
TCP_IDLE_TIMEOUT = 3600.0
"""A TCP connection idle this long is closed unless its DestinationRule says otherwise (Istio's default)."""
RETIRED_KEPT = 16
LEAN_POOLS_KEPT = 4096
# The caller's headers are forwarded as sent; the client must not add its own defaults.
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """The connection settings of one cluster, precomputed per config version."""

    cluster: str = ""
    connect_timeout: float = CONNECT_TIMEOUT
    max_connections: int = 0
    """0: unlimited."""
    idle_timeout: float = IDLE_TIMEOUT
    max_requests_per_connection: int = 0
    """0: unlimited."""
    max_connection_duration: float = 0.0
    """0: unlimited."""
    origination: Origination | None = None
    """TLS to endpoints without identity (DestinationRule tls SIMPLE / MUTUAL); None: plain text to them."""
    keepalive: Keepalive | None = None
    """connectionPool.tcp.tcpKeepalive; None: the system's defaults (keepalive off)."""
    tcp_idle_timeout: float = TCP_IDLE_TIMEOUT
    """connectionPool.tcp.idleTimeout for TCP connections; 0: none."""
    h2_upgrade: bool = False
    """connectionPool.http.h2UpgradePolicy UPGRADE: meshed endpoints (sidecars) are called over HTTP/2 too."""
    use_client_protocol: bool = False
    """connectionPool.http.useClientProtocol: each request goes upstream in the protocol its caller used
    (HTTP/2 or HTTP/1.1), whatever the port declares; h2UpgradePolicy then has no effect, as in Envoy."""
    max_concurrent_streams: int = 0
    """connectionPool.http.maxConcurrentStreams: requests in flight on one HTTP/2 connection; 0: the server's
    own limit only."""

    def http2(self, endpoint: Endpoint) -> bool:
        """Whether requests reach `endpoint` over HTTP/2: its port speaks it, or the upgrade applies to it."""
        return endpoint.http2 or (self.h2_upgrade and endpoint.identity is not None)

    def lean_allowed(self, endpoint: Endpoint) -> bool:
        """Whether an HTTP/1.1 caller's request may take the lean HTTP/1.1 client to `endpoint`."""
        return self.use_client_protocol or not self.http2(endpoint)

    @property
    def usable(self) -> bool:
        """False when the cluster's TLS origination context could not be built."""
        return self.origination is None or self.origination.ssl_context is not None

    @classmethod
    def of(
        cls, cluster: str, pool: ConnectionPoolSettings | None, origination: Origination | None = None
    ) -> PoolSettings:
        tcp = pool.tcp if pool is not None else None
        http = pool.http if pool is not None else None
        return cls(
            cluster=cluster,
            connect_timeout=tcp.connect_timeout if tcp is not None else CONNECT_TIMEOUT,
            max_connections=(tcp.max_connections or 0) if tcp is not None else 0,
            idle_timeout=http.idle_timeout if http is not None and http.idle_timeout else IDLE_TIMEOUT,
            max_requests_per_connection=(http.max_requests_per_connection or 0) if http is not None else 0,
            max_connection_duration=(tcp.max_connection_duration or 0.0) if tcp is not None else 0.0,
            origination=origination,
            keepalive=Keepalive.of(tcp.tcp_keepalive) if tcp is not None else None,
            tcp_idle_timeout=(
                tcp.idle_timeout if tcp is not None and tcp.idle_timeout is not None else TCP_IDLE_TIMEOUT
            ),
            h2_upgrade=http is not None and http.h2_upgrade_policy == H2UpgradePolicy.UPGRADE,
            use_client_protocol=bool(http.use_client_protocol) if http is not None else False,
            max_concurrent_streams=(http.max_concurrent_streams or 0) if http is not None else 0,
        )


DEFAULT_POOL = PoolSettings()

_LeanSettings = tuple[float, float, Origination | None, Keepalive | None]
_H2Settings = tuple[float, float, Origination | None, Keepalive | None, int]
"""What a lean pool is built with besides its endpoint: connect timeout, idle timeout, origination, keepalive."""


class _ConnectionLimits:
    """Marks a pooled connection to close after its Nth request or once it is older than the maximum duration.

    Checked as a connection is taken for a request, so the request runs and the connection closes after it.
    """

    def __init__(self, max_uses: int, max_age: float, clock: Clock) -> None:
        self._max_uses = max_uses
        self._max_age = max_age
        self._clock = clock
        self._seen: weakref.WeakKeyDictionary[ResponseHandler, tuple[float, int]] = weakref.WeakKeyDictionary()

    def count(self, connection: Connection) -> Connection:
        protocol = connection.protocol
        if protocol is not None:
            now = self._clock.monotonic()
            born, uses = self._seen.get(protocol, (now, 0))
            uses += 1
            self._seen[protocol] = (born, uses)
            if (self._max_uses and uses >= self._max_uses) or (self._max_age and now - born >= self._max_age):
                protocol.force_close()
        return connection


class _LimitedConnector(aiohttp.TCPConnector):
    """A pool whose connections are counted against `limits` (None: no limits)."""

    def __init__(self, limits: _ConnectionLimits | None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._limits = limits

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        return self._limits.count(connection) if self._limits is not None else connection


class _LimitedSpiffeConnector(SpiffeVerifyingConnector):
    def __init__(self, expected_identity: str, limits: _ConnectionLimits, **kwargs: object) -> None:
        super().__init__(expected_identity, **kwargs)
        self._limits = limits

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109
    ) -> Connection:
        return self._limits.count(await super().connect(req, traces, timeout))


class _OriginatingConnector(_LimitedConnector):
    """The pool of a cluster with TLS origination: checks subjectAltNames after the handshake, before use."""

    def __init__(self, origination: Origination, limits: _ConnectionLimits | None, **kwargs: object) -> None:
        super().__init__(limits, **kwargs)
        self._origination = origination

    async def _create_connection(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109
    ) -> ResponseHandler:
        protocol = await super()._create_connection(req, traces, timeout)
        self._origination.verify_transport(protocol.transport)
        return protocol


def _connector(settings: PoolSettings, identity: str | None, clock: Clock) -> aiohttp.TCPConnector:
    uses = settings.max_requests_per_connection
    options: dict[str, object] = {"limit": settings.max_connections, "force_close": uses == 1}
    if uses != 1:
        options["keepalive_timeout"] = settings.idle_timeout
    if settings.keepalive is not None:
        options["socket_factory"] = settings.keepalive.socket_factory()
    limited = uses > 1 or (uses != 1 and settings.max_connection_duration > 0)
    if identity is None and settings.origination is not None:
        limits = _ConnectionLimits(uses, settings.max_connection_duration, clock) if limited else None
        return _OriginatingConnector(settings.origination, limits, **options)
    if limited:
        limits = _ConnectionLimits(uses, settings.max_connection_duration, clock)
        if identity is None:
            return _LimitedConnector(limits, **options)
        return _LimitedSpiffeConnector(identity, limits, **options)
    if identity is None:
        return aiohttp.TCPConnector(**options)  # type: ignore[arg-type]
    return SpiffeVerifyingConnector(identity, **options)


def _session(settings: PoolSettings, identity: str | None, clock: Clock) -> aiohttp.ClientSession:
    connector = _connector(settings, identity, clock)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=_SKIP_AUTO_HEADERS,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout),
    )


class UpstreamPools:
    """Keep-alive pools keyed by cluster and the identity the far end must present (None: plain text)."""

    def __init__(self, tls: TlsContexts, clock: Clock = SYSTEM_CLOCK) -> None:
        self._tls = tls
        self._clock = clock
        self._sessions: dict[tuple[str, str | None], tuple[PoolSettings, aiohttp.ClientSession]] = {}
        self._retired: list[aiohttp.ClientSession] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._lean: dict[tuple[str, str | None, str, int], tuple[_LeanSettings, LeanPool]] = {}
        self._h2: dict[tuple[str, str | None, str, int], tuple[_H2Settings, H2Pool]] = {}

    def session_for(
        self, endpoint: Endpoint, settings: PoolSettings = DEFAULT_POOL
    ) -> tuple[aiohttp.ClientSession, ssl.SSLContext | bool]:
        """The pool for this endpoint and the `ssl` argument to request with: the current mesh client context
        (endpoint with identity), the cluster's origination context, or False (plain text).

        Raises RuntimeError before the first mesh certificate, OriginationUnavailable when the cluster's
        origination context could not be built."""
        # Passing the context per request keys pooled connections by context, so a renewed
        # certificate is used by every new connection while older ones drain.
        context = self.context_for(endpoint, settings)
        ssl_arg: ssl.SSLContext | bool = context if context is not None else False
        key = (settings.cluster, endpoint.identity)
        found = self._sessions.get(key)
        if found is not None and found[0] == settings:
            return found[1], ssl_arg
        if found is not None:
            self._retire(found[1])
        session = _session(settings, endpoint.identity, self._clock)
        self._sessions[key] = (settings, session)
        return session, ssl_arg

    def context_for(self, endpoint: Endpoint, settings: PoolSettings = DEFAULT_POOL) -> ssl.SSLContext | None:
        """The TLS context the lean client connects to this endpoint with: the current mesh client context
        (endpoint with identity), the cluster's origination context, or None (plain text). Raises as
        `session_for` does."""
        if endpoint.identity is not None:
            return self._tls.client()
        if settings.origination is not None:
            return settings.origination.context()
        return None

    def lean_for(self, endpoint: Endpoint, settings: PoolSettings = DEFAULT_POOL) -> LeanPool | None:
        """The lean client's pool (h1client.py) for this endpoint, when the cluster's pool sets no connection
        limits (maxConnections, maxRequestsPerConnection, maxConnectionDuration); None: use `session_for`."""
        if (
            settings.max_connections
            or settings.max_requests_per_connection
            or settings.max_connection_duration
            or ((endpoint.http2 or settings.h2_upgrade) and not settings.lean_allowed(endpoint))  # HTTP/2 upstream
        ):
            return None
        origination = settings.origination if endpoint.identity is None else None
        key = (settings.cluster, endpoint.identity, endpoint.address, endpoint.port)
        wanted = (settings.connect_timeout, settings.idle_timeout, origination, settings.keepalive)
        found = self._lean.get(key)
        if found is not None:
            if found[0] == wanted:
                return found[1]
            found[1].close()  # new settings or a rebuilt origination: the old pool drains
            del self._lean[key]
        if len(self._lean) >= LEAN_POOLS_KEPT:  # endpoints churned: start over rather than grow
            for _, old in self._lean.values():
                old.close()
            self._lean.clear()
        pool = LeanPool(
            endpoint.address,
            endpoint.port,
            endpoint.identity,
            settings.connect_timeout,
            settings.idle_timeout,
            origination,
            settings.keepalive,
        )
        self._lean[key] = (wanted, pool)
        return pool

    def h2_context_for(self, endpoint: Endpoint, settings: PoolSettings = DEFAULT_POOL) -> ssl.SSLContext | None:
        """`context_for` of an HTTP/2 endpoint: originated TLS offers ALPN `h2` (mTLS to a sidecar needs none)."""
        if endpoint.identity is None and settings.origination is not None:
            return settings.origination.http2_context()
        return self.context_for(endpoint, settings)

    def h2_for(self, endpoint: Endpoint, settings: PoolSettings = DEFAULT_POOL) -> H2Pool:
        """The HTTP/2 pool (h2client.py) for an endpoint whose port speaks HTTP/2 (`endpoint.http2`)."""
        origination = settings.origination if endpoint.identity is None else None
        key = (settings.cluster, endpoint.identity, endpoint.address, endpoint.port)
        wanted = (
            settings.connect_timeout,
            settings.idle_timeout,
            origination,
            settings.keepalive,
            settings.max_concurrent_streams,
        )
        found = self._h2.get(key)
        if found is not None:
            if found[0] == wanted:
                return found[1]
            found[1].close()
            del self._h2[key]
        if len(self._h2) >= LEAN_POOLS_KEPT:
            for _, old in self._h2.values():
                old.close()
            self._h2.clear()
        from services.proxy.h2client import H2Pool  # loaded by the first HTTP/2 endpoint

        pool = H2Pool(
            endpoint.address,
            endpoint.port,
            endpoint.identity,
            settings.connect_timeout,
            origination,
            settings.keepalive,
            settings.idle_timeout,
            settings.max_concurrent_streams,
        )
        self._h2[key] = (wanted, pool)
        return pool

    @staticmethod
    def server_name(endpoint: Endpoint, settings: PoolSettings) -> str | None:
        """The SNI to request this endpoint with: the origination's name (None: aiohttp's default, the address)."""
        origination = settings.origination
        return origination.server_name if origination is not None and endpoint.identity is None else None

    def _retire(self, session: aiohttp.ClientSession) -> None:
        self._retired.append(session)
        while len(self._retired) > RETIRED_KEPT:
            oldest = self._retired.pop(0)
            task = asyncio.get_running_loop().create_task(oldest.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        sessions = [session for _, session in self._sessions.values()] + self._retired
        for _, pool in self._lean.values():
            pool.close()
        self._lean.clear()
        for _, h2_pool in self._h2.values():
            h2_pool.close()
        self._h2.clear()
        self._sessions.clear()
        self._retired = []
        for session in sessions:
            await session.close()
