"""Outbound TCP, app -> mesh: a local listener per declared TCP upstream, each connection relayed as bytes.

TCP has no Host header to route on, so the app reaches a TCP service through the port its sidecar opens
for it: `--upstream name:port[:localport]` binds 127.0.0.1:localport at start. Per connection: the config
snapshot current now (none: closed, NC) -> the upstream's TCP listener and first matching route, weights
picking the cluster (tcp_routes.py; none: NR) -> the cluster's connectionPool `tcp.maxConnections` (full:
closed at once, UO) -> its load balancer over healthy, non-ejected endpoints (none: UH; consistentHash
`useSourceIp` hashes the caller's address) -> connect within `tcp.connectTimeout` (default 10s) -> to an
endpoint with an identity, mTLS with our SPIFFE certificate, the peer verified against the trust bundle and
required to present exactly the identity pilot sent, before any byte of the app's is sent (any failure:
closed, UF, counted by outlier detection); to an endpoint without identity in a cluster whose
DestinationRule sets `tls.mode` SIMPLE or MUTUAL, TLS originated with the cluster's context (origination.py:
SNI, verification and subjectAltNames as for HTTP; failure: closed, UF; rotated files are picked up by the
runtime lookup as for HTTP, for the next connection, while open ones keep theirs) -> when the callee's sidecar
accepted ALPN `istio-peer-exchange`, our metadata block out and its block in (tcp_peer_exchange.py;
telemetry only, fails open) -> bytes both ways until both sides are done (tcp_relay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable, Mapping

from services.proxy import proxy_protocol
from services.proxy.balancer import ClusterRuntime, ClusterRuntimes, Lease
from services.proxy.errors import NoHealthyUpstream, NotReady, ProxyError, UpstreamConnectFailure, UpstreamOverflow
from services.proxy.keepalive import apply_to_transport
from services.proxy.origination import Origination, OriginationRefused, OriginationUnavailable
from services.proxy.snapshot import ProxyState
from services.proxy.sni import NotClientHello, read_client_hello
from services.proxy.sni import server_name as sni_of
from services.proxy.tcp_peer_exchange import as_caller, negotiated
from services.proxy.tcp_relay import relay
from services.proxy.tcp_routes import cluster_for, reads_sni
from services.proxy.tcp_stream import ByteStream, PlainStream, PrefixedStream, TlsStream
from services.proxy.telemetry.exchange import PeerBook, own_metadata
from services.proxy.telemetry.labels import WorkloadLabels, endpoint_labels
from services.proxy.telemetry.observe import Telemetry
from services.proxy.telemetry.tcp import TcpMeter, address, source_labels
from services.proxy.tls import TlsContexts
from shared.clock import SYSTEM_CLOCK, Clock
from shared.consul import TcpUpstream
from shared.model.proxy_config import Cluster, Endpoint, ProxyConfig
from shared.peer_metadata import block_for

log = logging.getLogger(__name__)

LOCAL_HOST = "127.0.0.1"
HELLO_TIMEOUT = 10.0
"""How long a listener with TLS routes waits for the client's ClientHello."""


class TcpOutbound:
    """Owns the local TCP listeners and their connections; `close` ends both directions of every one."""

    def __init__(
        self,
        state: ProxyState,
        tls: TlsContexts,
        telemetry: Telemetry,
        upstreams: tuple[TcpUpstream, ...],
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        locality: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """`locality` and `labels`: this sidecar's own, for locality-aware balancing (locality.py)."""
        self._state = state
        self._tls = tls
        self._telemetry = telemetry
        self._upstreams = upstreams
        self._clock = clock
        self._rng = rng or random.Random()
        self._runtimes = ClusterRuntimes(clock, self._rng, locality, labels)
        self._servers: dict[TcpUpstream, asyncio.Server] = {}
        self._connections: set[asyncio.Task[None]] = set()
        self._clusters: tuple[ProxyConfig | None, dict[str, Cluster]] = (None, {})
        self._own_block = block_for(own_metadata(telemetry.workload))
        self._peers = PeerBook()

    @property
    def ports(self) -> dict[str, int]:
        """`name:port` of each declared upstream -> the local port it is reachable on."""
        return {f"{u.name}:{u.port}": server.sockets[0].getsockname()[1] for u, server in self._servers.items()}

    async def start(self) -> None:
        for upstream in self._upstreams:

            async def serve(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: TcpUpstream = upstream
            ) -> None:
                await self._serve(up, reader, writer)

            self._servers[upstream] = await asyncio.start_server(serve, LOCAL_HOST, upstream.local_port)
            log.info(
                "TCP upstream %s:%s on %s", upstream.name, upstream.port, self.ports[f"{upstream.name}:{upstream.port}"]
            )

    async def close(self) -> None:
        for server in self._servers.values():
            server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()

    def _cluster(self, config: ProxyConfig, name: str) -> Cluster:
        known, by_name = self._clusters
        if known is not config:
            by_name = {cluster.name: cluster for cluster in config.clusters}
            self._clusters = (config, by_name)
        found = by_name.get(name)
        if found is None:
            raise NoHealthyUpstream(f"cluster {name!r} is not defined")
        return found

    async def _serve(self, upstream: TcpUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = f"{upstream.name}:{upstream.port}"
        downstream: ByteStream = PlainStream(reader, writer)
        server_name: str | None = None
        snapshot = self._state.snapshot
        if snapshot is not None and reads_sni(snapshot.config, upstream):  # TLS routes: the ClientHello first
            try:
                async with asyncio.timeout(HELLO_TIMEOUT):
                    hello = await read_client_hello(reader)
            except (NotClientHello, TimeoutError, asyncio.IncompleteReadError, OSError) as err:
                log.info(
                    "TCP %s has TLS routes and the client sent no ClientHello, closing: %s", name, err or "timeout"
                )
                writer.close()
                return
            server_name = sni_of(hello)
            downstream = PrefixedStream(hello, downstream)

        def pick(config: ProxyConfig) -> str:
            return cluster_for(config, upstream, self._rng, server_name)

        await self.serve_stream(downstream, writer, pick, name if server_name is None else f"{name} SNI {server_name}")

    async def serve_stream(
        self, downstream: ByteStream, writer: asyncio.StreamWriter, pick: Callable[[ProxyConfig], str], name: str
    ) -> None:
        """One accepted connection (`downstream`, on `writer`'s transport): `pick` names the cluster from the
        current config (or raises NoRoute), then it is relayed to an endpoint of it, as described above."""
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        remote = writer.get_extra_info("peername")
        meter = TcpMeter(self._telemetry, self._clock, address(remote), address(writer.get_extra_info("sockname")))
        cluster: Cluster | None = None
        lease: Lease | None = None
        try:
            try:
                snapshot = self._state.snapshot
                if snapshot is None:
                    raise NotReady("no configuration received yet")
                cluster = self._cluster(snapshot.config, pick(snapshot.config))
                runtime = self._runtimes.get(cluster)
                lease = self._admit(runtime, remote)
                stream = await self._connect(runtime, lease.endpoint, writer)
                stream, callee = await self._exchange(stream, lease.endpoint)
            except ProxyError as err:
                log.info("TCP %s refused (%s): %s", name, err.flag, err.message)
                meter.opened(source_labels(self._telemetry, cluster, lease.endpoint if lease else None, err.flag))
                downstream.close()
                await downstream.wait_closed()
                meter.closed(_host(lease.endpoint) if lease else "-", cluster.name if cluster else "-")
                return
            meter.opened(source_labels(self._telemetry, cluster, lease.endpoint, "-", callee))
            try:
                idle = runtime.pool.tcp_idle_timeout or None
                await relay(downstream, stream, meter.received, meter.sent, idle, self._clock)
            finally:
                meter.closed(_host(lease.endpoint), cluster.name)
        finally:
            if lease is not None:
                lease.release()
            if task is not None:
                self._connections.discard(task)

    @staticmethod
    def _admit(runtime: ClusterRuntime, remote: object) -> Lease:
        """maxConnections (UO), then an endpoint (UH); the lease counts the connection until released."""
        limit = runtime.breaker.limits.max_connections
        if runtime.breaker.active >= limit:
            raise UpstreamOverflow(f"cluster {runtime.name!r}: {runtime.breaker.active} connections (maxConnections)")
        source_ip = remote[0] if isinstance(remote, tuple) and remote else None
        return Lease.take(runtime, runtime.hash_key({}, source_ip, ""), frozenset())

    async def _connect(
        self, runtime: ClusterRuntime, endpoint: Endpoint, downstream: asyncio.StreamWriter
    ) -> ByteStream:
        """A connected (and for a meshed endpoint, mutually authenticated) stream; UpstreamConnectFailure else.
        An endpoint outside the mesh gets the cluster's PROXY header first (proxy_protocol.py), naming the
        `downstream` connection's ends."""
        try:
            async with asyncio.timeout(runtime.pool.connect_timeout):
                reader, writer = await asyncio.open_connection(endpoint.address, endpoint.port)
            apply_to_transport(writer.transport, runtime.pool.keepalive)
        except (OSError, TimeoutError) as err:
            runtime.report(endpoint, None)
            raise UpstreamConnectFailure(f"connect to {_host(endpoint)} failed: {err or 'timeout'}") from err
        policy = runtime.config.traffic_policy
        if endpoint.identity is None and policy is not None and policy.proxy_protocol is not None:
            peer, ours = downstream.get_extra_info("peername"), downstream.get_extra_info("sockname")
            writer.write(proxy_protocol.header(policy.proxy_protocol.version, peer, ours))
        if endpoint.identity is None:
            if runtime.pool.origination is not None:
                return await self._originate(runtime, endpoint, runtime.pool.origination, reader, writer)
            runtime.report(endpoint, 200)
            return PlainStream(reader, writer)
        try:
            stream = await TlsStream.wrap(reader, writer, self._tls.tcp_client(), server_side=False)
        except (OSError, TimeoutError, ssl.SSLError, RuntimeError) as err:
            writer.close()
            runtime.report(endpoint, None)
            raise UpstreamConnectFailure(f"TLS to {_host(endpoint)} failed: {err or 'timeout'}") from err
        if stream.peer_spiffe_id != endpoint.identity:
            stream.close()
            runtime.report(endpoint, None)
            raise UpstreamConnectFailure(
                f"upstream {_host(endpoint)} presented {stream.peer_spiffe_id or 'no SPIFFE ID'}, "
                f"expected {endpoint.identity}"
            )
        runtime.report(endpoint, 200)
        return stream

    @staticmethod
    async def _originate(
        runtime: ClusterRuntime,
        endpoint: Endpoint,
        origination: Origination,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> ByteStream:
        """TLS with the cluster's own context (DestinationRule tls SIMPLE / MUTUAL), checked before any app byte."""
        try:
            context = origination.context()
        except OriginationUnavailable:
            writer.close()
            raise
        try:
            stream = await TlsStream.wrap(
                reader, writer, context, server_side=False, server_hostname=origination.server_name
            )
        except (OSError, TimeoutError, ssl.SSLError) as err:
            writer.close()
            runtime.report(endpoint, None)
            raise UpstreamConnectFailure(
                f"cluster {runtime.name}: TLS origination to {_host(endpoint)} as {origination.server_name} "
                f"failed: {err or 'timeout'}"
            ) from err
        try:
            origination.verify(stream.ssl_object)
        except OriginationRefused as err:
            stream.close()
            runtime.report(endpoint, None)
            raise UpstreamConnectFailure(str(err)) from err
        runtime.report(endpoint, 200)
        return stream

    async def _exchange(self, stream: ByteStream, endpoint: Endpoint) -> tuple[ByteStream, WorkloadLabels | None]:
        """The stream to relay, and the callee's labels when its sidecar sent metadata we believe."""
        if not isinstance(stream, TlsStream) or not negotiated(stream):
            return stream, None
        wrapped, value = await as_caller(stream, self._own_block)
        if not value:
            return wrapped, None
        return wrapped, self._peers.callee(value, endpoint.identity, endpoint_labels(endpoint))


def _host(endpoint: Endpoint) -> str:
    return f"{endpoint.address}:{endpoint.port}"
