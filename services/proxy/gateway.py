"""A gateway proxy's listeners: one per Gateway server port in the config, opened, changed and closed as the
config changes. HTTP and HTTPS servers run the outbound filter chain on their server's routes (after
gateway_authz.py); TCP and TLS (PASSTHROUGH) servers relay each admitted connection by their TCP or SNI routes.

An HTTPS server terminates TLS with its certificate files, one per merged server chosen by SNI
(gateway_tls.py). The files are checked every RELOAD_INTERVAL seconds; a rotated certificate is loaded into its
context, and new handshakes use it. Files that do not load keep the listener off (a new server) or on its last
good certificate (a rotation), logged once per change. A port that cannot be bound is logged and retried; the
other servers serve on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from services.proxy.authz import Authorizer, RequestFacts
from services.proxy.errors import NoRoute
from services.proxy.ext_authz import ExtAuthzClient
from services.proxy.gateway_authz import GatewayGuard
from services.proxy.gateway_tls import CertificateFilesError, ServerCertificates
from services.proxy.inbound import InboundStats
from services.proxy.jwt_authn import JwksCache
from services.proxy.listeners import Listener, start_listener
from services.proxy.outbound import OutboundHandler
from services.proxy.snapshot import ConfigSnapshot, ProxyState, ServerState
from services.proxy.sni import NotClientHello, covers, read_client_hello, server_name
from services.proxy.tcp_authz import tcp_authorizer
from services.proxy.tcp_outbound import TcpOutbound
from services.proxy.tcp_routes import pick_weighted
from services.proxy.tcp_stream import ByteStream, PlainStream, PrefixedStream, TlsStream
from services.proxy.telemetry.context import ObservedPools
from services.proxy.telemetry.setup import Telemetry
from shared.clock import Clock
from shared.model.gateway import ServerProtocol
from shared.model.proxy_config import GatewayServer, ProxyConfig
from shared.tasks import cancel_until_done

log = logging.getLogger(__name__)

RELOAD_INTERVAL = 5.0
HTTPS_ALPN = ("h2", "http/1.1")
"""What HTTPS servers offer: HTTP/2 clients (gRPC among them) negotiate it over TLS."""
HELLO_TIMEOUT = 10.0
"""How long a TLS server waits for a client's ClientHello before closing the connection."""


def pick_cluster(config: ProxyConfig, port: int, sni: str | None, rng: random.Random) -> str:
    """The cluster a TCP server's first route (or a TLS server's first route covering `sni`) picks by weight;
    raises NoRoute when none applies."""
    server = next((s for s in config.gateway_servers if s.port == port), None)
    if server is None:
        raise NoRoute(f"gateway port {port} is not in the config")
    if server.protocol == ServerProtocol.TCP or server.tls is not None:  # TCP, or TLS terminated here
        if not server.tcp_routes:
            raise NoRoute(f"no TCP route on gateway port {port}")
        return pick_weighted(server.tcp_routes[0], rng)
    if sni is None:
        raise NoRoute(f"the client named no server (SNI) on gateway port {port}")
    for route in server.sni_routes:
        if any(covers(pattern, sni) for pattern in route.sni_hosts):
            return pick_weighted(route, rng)
    raise NoRoute(f"no TLS route on gateway port {port} covers SNI {sni}")


def _tls_of(server: GatewayServer) -> tuple[object, ...]:
    """What a server's listener is built from: a change reopens it."""
    return (server.protocol, server.tls, tuple(server.sni_tls))


@dataclass
class _Served:
    server: GatewayServer
    listener: Listener | None
    """An HTTP or HTTPS server's; None for TCP and TLS servers (`tcp_server`)."""
    certificates: ServerCertificates | None
    tcp_server: asyncio.Server | None = None

    async def close(self) -> None:
        if self.listener is not None:
            await self.listener.close()
        if self.tcp_server is not None:
            self.tcp_server.close()
            await self.tcp_server.wait_closed()


class GatewayListeners:
    """Keeps one listener per server port of the current config."""

    def __init__(
        self,
        state: ProxyState,
        pools: ObservedPools,
        telemetry: Telemetry,
        address: str,
        clock: Clock,
        rng: random.Random,
        locality: str | None,
        labels: Mapping[str, str],
        ext_authz: ExtAuthzClient | None = None,
        tcp: TcpOutbound | None = None,
    ) -> None:
        """`ext_authz`: the providers CUSTOM AuthorizationPolicies selecting the gateway may name. `tcp`: what
        relays the connections of TCP and TLS servers (the proxy's TCP side: its mTLS, pools and meters)."""
        self._state = state
        self._tcp = tcp
        self._tcp_authorizer: tuple[ConfigSnapshot | None, Authorizer | None] = (None, None)
        self._jwks = JwksCache(clock)
        self.stats = InboundStats()
        """Requests every server refused, by stage (isthmus_proxy_inbound_denied_total reads it)."""
        self._ext_authz = ext_authz or ExtAuthzClient({})
        self._pools = pools
        self._telemetry = telemetry
        self._address = address
        self._clock = clock
        self._rng = rng
        self._locality = locality
        self._labels = labels
        self.served: dict[int, _Served] = {}
        self._wanted: ConfigSnapshot | None = None
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._logged: dict[int, str] = {}

    def start(self) -> None:
        """Follow the config from now on (the reconciling and the certificate checks run as tasks)."""
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="gateway listeners"))
        self._tasks.append(asyncio.create_task(self._reload_loop(), name="gateway certificates"))
        self._state.follow(self._follow)

    def _follow(self, snapshot: ConfigSnapshot) -> None:
        self._wanted = snapshot
        self._changed.set()

    async def _reconcile_loop(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._wanted is None:
                continue
            try:
                await self.reconcile(self._wanted)
            except Exception:  # the servers already open serve on; the next change or retry tries again
                log.exception("gateway servers not reconciled with config %s", self._wanted.version)

    async def reconcile(self, snapshot: ConfigSnapshot) -> None:
        """Close the listeners of ports gone or changed in protocol or TLS, then open the missing ones."""
        wanted = {server.port: server for server in snapshot.config.gateway_servers}
        for port, served in list(self.served.items()):
            server = wanted.get(port)
            if server is None or _tls_of(server) != _tls_of(served.server):
                del self.served[port]
                await served.close()
                log.info("gateway server %s closed", served.server.name)
            else:
                served.server = server
        for port, server in wanted.items():
            if port not in self.served:
                await self._open(server)

    async def _open(self, server: GatewayServer) -> None:
        if server.protocol in (ServerProtocol.TCP, ServerProtocol.TLS):
            await self._open_tcp(server)
            return
        try:
            certificates = (
                ServerCertificates(server.tls, server.sni_tls, HTTPS_ALPN) if server.tls is not None else None
            )
            state = ServerState(self._state, server.port)
            scheme = "https" if server.tls is not None else "http"
            handler = OutboundHandler(
                state, self._pools, self._clock, self._rng, self._locality, self._labels, edge_scheme=scheme
            )
            guard = GatewayGuard(state, server.port, handler, self._jwks, self._ext_authz, self._clock, self.stats)
            listener = await start_listener(
                f"gateway-{server.name}",
                self._telemetry.outbound(guard),
                self._address,
                server.port,
                ssl_context=certificates.context if certificates is not None else None,
                pass_through=True,
                immediate=self._telemetry.outbound_immediate(guard.immediate),
            )
        except (OSError, CertificateFilesError) as err:
            self._log_once(server.port, f"gateway server {server.name} not serving: {err}")
            return
        self.served[server.port] = _Served(server, listener, certificates)
        self._logged.pop(server.port, None)
        log.info("gateway server %s listening on %s:%s", server.name, self._address, listener.port)

    async def _open_tcp(self, server: GatewayServer) -> None:
        port = server.port
        try:
            certificates = ServerCertificates(server.tls, server.sni_tls) if server.tls is not None else None
        except CertificateFilesError as err:
            self._log_once(port, f"gateway server {server.name} not serving: {err}")
            return
        passthrough = server.protocol == ServerProtocol.TLS and certificates is None

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if certificates is not None:
                await self._terminated(port, certificates, reader, writer)
            else:
                await self._relay(port, passthrough, reader, writer)

        try:
            tcp_server = await asyncio.start_server(accepted, self._address, port)
        except OSError as err:
            self._log_once(port, f"gateway server {server.name} not serving: {err}")
            return
        self.served[port] = _Served(server, None, certificates, tcp_server)
        self._logged.pop(port, None)
        log.info("gateway server %s listening on %s:%s", server.name, self._address, port)

    async def _terminated(
        self, port: int, certificates: ServerCertificates, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One connection of a TLS server that terminates TLS: the handshake, then relayed by its TCP route."""
        try:
            stream = await TlsStream.wrap(reader, writer, certificates.context, server_side=True)
        except (OSError, TimeoutError, ssl.SSLError, RuntimeError) as err:
            log.info("gateway TLS server on %s: handshake failed: %s", port, err or "timeout")
            writer.close()
            return
        await self._relay(port, False, reader, writer, stream, stream.ssl_object.server_hostname)

    async def _relay(
        self,
        port: int,
        sni: bool,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        terminated: ByteStream | None = None,
        name: str | None = None,
    ) -> None:
        """One connection of a TCP or TLS server: its SNI read (PASSTHROUGH), then relayed by the route it picks.
        `terminated`: the decrypted stream of a server that terminated TLS, `name` the SNI its client sent."""
        downstream: ByteStream = terminated or PlainStream(reader, writer)
        if sni:
            try:
                async with asyncio.timeout(HELLO_TIMEOUT):
                    hello = await read_client_hello(reader)
                name = server_name(hello)
            except (NotClientHello, TimeoutError, asyncio.IncompleteReadError, OSError) as err:
                log.info("gateway TLS server on %s: no ClientHello, closing: %s", port, err or "timeout")
                writer.close()
                return
            downstream = PrefixedStream(hello, downstream)
        if self._tcp is None or not self._admitted(port, name, writer):
            writer.close()
            return

        def pick(config: ProxyConfig) -> str:
            return pick_cluster(config, port, name, self._rng)

        await self._tcp.serve_stream(downstream, writer, pick, f"gateway port {port}" + (f" SNI {name}" if sni else ""))

    def _admitted(self, port: int, sni: str | None, writer: asyncio.StreamWriter) -> bool:
        """AuthorizationPolicy selecting the gateway, rewritten for connections as on a sidecar's TCP port
        (tcp_authz.py: HTTP-only rules never allow, CUSTOM acts as DENY); no config or an error denies."""
        snapshot = self._state.snapshot
        remote, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        if snapshot is None:
            return False
        known, authorizer = self._tcp_authorizer
        if known is not snapshot or authorizer is None:
            authorizer = tcp_authorizer(snapshot.config.inbound.authorization)
            self._tcp_authorizer = (snapshot, authorizer)
        facts = RequestFacts(
            peer_spiffe_id=None,
            source_ip=str(remote[0]) if isinstance(remote, tuple) else "",
            method="",
            path="",
            host="",
            port=port,
            headers={},
            sni=sni or "",
            destination_ip=str(local[0]) if isinstance(local, tuple) else "",
        )
        try:
            allowed, reason = authorizer.allowed(facts)
        except Exception as err:  # any surprise in policy evaluation denies
            allowed, reason = False, f"authorization error: {err}"
        if not allowed:
            self.stats.rbac_denied += 1
            log.info("gateway port %s: connection from %s denied: %s", port, facts.source_ip, reason)
        return allowed

    def _log_once(self, port: int, message: str) -> None:
        if self._logged.get(port) != message:
            self._logged[port] = message
            log.error("%s", message)

    async def _reload_loop(self) -> None:
        while True:
            await self._clock.sleep(RELOAD_INTERVAL)
            self.reload_changed()
            if self._wanted is not None and any(
                server.port not in self.served for server in self._wanted.config.gateway_servers
            ):
                self._changed.set()  # a server that could not open (files, port) is tried again

    def reload_changed(self) -> None:
        """Load the certificate files of every HTTPS server whose files changed since they were loaded."""
        for served in self.served.values():
            if served.certificates is None:
                continue
            for failure in served.certificates.reload_changed():
                self._log_once(
                    served.server.port, f"gateway server {served.server.name} keeps its certificate: {failure}"
                )

    @property
    def listeners(self) -> dict[str, Listener]:
        """The HTTP and HTTPS servers' listeners (TCP servers' connections are the TCP side's)."""
        return {
            f"gateway-{served.server.name}": served.listener
            for served in self.served.values()
            if served.listener is not None
        }

    async def close(self) -> None:
        await cancel_until_done(self._tasks)
        self._tasks.clear()
        for served in self.served.values():
            await served.close()
        self.served.clear()
        await self._jwks.close()
        await self._ext_authz.close()
