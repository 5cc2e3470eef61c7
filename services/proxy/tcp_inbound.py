"""Inbound TCP, mesh -> app, for a workload whose port is declared TCP: no HTTP parsing, connection-level policy.

The peeking listener (peek.py) has already admitted the transport by the PeerAuthentication mode. Then,
per connection: TLS handshake for a TLS peer (our certificate, the peer's verified against the trust
bundle) -> when the caller's sidecar negotiated ALPN `istio-peer-exchange` and its certificate names a valid
SPIFFE ID, its metadata block in and ours out (tcp_peer_exchange.py; telemetry only, fails open) -> config
snapshot (none: closed, NC) -> a TLS peer whose certificate names no SPIFFE ID, or one that is not
spiffe://<td>/ns/<ns>/sa/<sa>, is closed (flag RBAC, counted as a spiffe_id refusal) -> AuthorizationPolicy
on connection-level facts only (tcp_authz.py: source principal, namespace, IP, destination port; a denial
closes the connection before a byte reaches the app, flag RBAC) -> connect to 127.0.0.1:<app-port>
(failure: closed, UF) -> bytes both ways, half-close passed on (tcp_relay.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass

from services.proxy.app_side import LOOPBACK, AppCallSettings
from services.proxy.authz import Authorizer, RequestFacts
from services.proxy.errors import AccessDenied, NotReady, ProxyError, UpstreamConnectFailure, UpstreamOverflow
from services.proxy.snapshot import ConfigSnapshot, ProxyState
from services.proxy.tcp_authz import tcp_authorizer
from services.proxy.tcp_peer_exchange import as_callee, negotiated
from services.proxy.tcp_relay import relay
from services.proxy.tcp_stream import ByteStream, PlainStream, TlsStream
from services.proxy.telemetry.exchange import PeerBook, own_metadata
from services.proxy.telemetry.labels import WorkloadLabels
from services.proxy.telemetry.observe import Telemetry
from services.proxy.telemetry.tcp import TcpMeter, address, destination_labels
from services.proxy.tls import TlsContexts
from shared.clock import SYSTEM_CLOCK, Clock
from shared.identity.spiffe import InvalidSpiffeId, parse_spiffe_id
from shared.model.peer_authentication import MtlsMode
from shared.peer_metadata import block_for

log = logging.getLogger(__name__)


@dataclass
class TcpInboundStats:
    """Connections refused by each security stage, in the reasons of `isthmus_proxy_inbound_denied_total`."""

    rbac_denied: int = 0
    spiffe_id_refused: int = 0
    """TLS peers whose (verified) certificate names no SPIFFE ID, or one that does not parse."""
    app_overflow: int = 0
    """Connections closed at once: the app's connection pool (the Sidecar's ingress limits) was full."""


class SpiffeIdRefused(AccessDenied):
    """A TLS peer without a valid SPIFFE ID: no principal to authorize."""


def valid_peer_id(stream: ByteStream) -> str | None:
    """The TLS peer's SPIFFE ID when it parses as spiffe://<td>/ns/<ns>/sa/<sa>; None otherwise (or plain text)."""
    peer = stream.peer_spiffe_id if isinstance(stream, TlsStream) else None
    if peer is None:
        return None
    try:
        parse_spiffe_id(peer)
    except InvalidSpiffeId:
        return None
    return peer


class TcpInbound:
    """Called by the inbound listener with each admitted connection's socket; owns it from then on."""

    def __init__(
        self,
        state: ProxyState,
        tls: TlsContexts,
        app_port: int,
        inbound_port: int,
        telemetry: Telemetry,
        clock: Clock = SYSTEM_CLOCK,
        instance_address: str = LOOPBACK,
    ) -> None:
        """`instance_address`: where a Sidecar ingress listener's `0.0.0.0:PORT` connects to the app."""
        self._state = state
        self._instance_address = instance_address
        self._active = 0
        """Connections to the app open now (counted against the ingress connectionPool's tcp.maxConnections)."""
        self._tls = tls
        self._app_port = app_port
        self._inbound_port = inbound_port
        self._telemetry = telemetry
        self._clock = clock
        self._authorizer: tuple[ConfigSnapshot | None, Authorizer | None] = (None, None)
        self._own_block = block_for(own_metadata(telemetry.workload))
        self._peers = PeerBook()
        self.stats = TcpInboundStats()

    @property
    def app_connections(self) -> int:
        """Connections to the app open now."""
        return self._active

    def mtls_mode(self) -> MtlsMode:
        """The mode for the next connection: the current config's, for our app port; STRICT before any config."""
        snapshot = self._state.snapshot
        return MtlsMode.STRICT if snapshot is None else snapshot.config.inbound.mode_for_port(self._app_port)

    def _authorizer_for(self, snapshot: ConfigSnapshot) -> Authorizer:
        known, authorizer = self._authorizer
        if known is not snapshot or authorizer is None:
            authorizer = tcp_authorizer(snapshot.config.inbound.authorization)
            self._authorizer = (snapshot, authorizer)
        return authorizer

    async def __call__(self, conn: socket.socket, tls: bool) -> None:
        reader, writer = await asyncio.open_connection(sock=conn)
        remote, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        meter = TcpMeter(self._telemetry, self._clock, address(remote), address(local))
        settings = self._app_settings()
        app = settings.address
        cluster = f"inbound|{self._inbound_port}||"
        downstream: ByteStream = PlainStream(reader, writer)
        if tls:
            try:
                downstream = await TlsStream.wrap(reader, writer, self._tls.listener_context(), server_side=True)
            except (OSError, TimeoutError, ssl.SSLError, RuntimeError) as err:
                log.info("inbound TCP: TLS handshake failed: %s", err)
                writer.close()
                return
        peer = valid_peer_id(downstream)
        caller: WorkloadLabels | None = None
        if peer is not None and isinstance(downstream, TlsStream) and negotiated(downstream):
            downstream, value = await as_callee(downstream, self._own_block)
            caller = self._peers.caller(value, peer) if value else None
        try:
            self._authorize(peer, tls, remote, local)
            upstream = await self._connect_app(settings)
        except ProxyError as err:
            if isinstance(err, SpiffeIdRefused):
                self.stats.spiffe_id_refused += 1
            elif isinstance(err, AccessDenied):
                self.stats.rbac_denied += 1
            log.info("inbound TCP from %s closed (%s): %s", peer or address(remote), err.flag, err.message)
            meter.opened(destination_labels(self._telemetry, peer, tls, err.flag, caller))
            downstream.close()
            await downstream.wait_closed()
            meter.closed(app, cluster)
            return
        meter.opened(destination_labels(self._telemetry, peer, tls, "-", caller))
        try:
            await relay(downstream, upstream, meter.received, meter.sent)
        finally:
            self._active -= 1
            meter.closed(app, cluster)

    def _authorize(self, peer: str | None, tls: bool, remote: object, local: object) -> None:
        snapshot = self._state.snapshot
        if snapshot is None:
            raise NotReady("no configuration received yet; inbound policy unknown")
        if tls and peer is None:
            raise SpiffeIdRefused("peer certificate carries no valid SPIFFE ID")
        facts = RequestFacts(
            peer_spiffe_id=peer,
            source_ip=str(remote[0]) if isinstance(remote, tuple) else "",
            method="",
            path="",
            host="",
            port=self._inbound_port,
            headers={},
            destination_ip=str(local[0]) if isinstance(local, tuple) else "",
        )
        try:
            allowed, reason = self._authorizer_for(snapshot).allowed(facts)
        except Exception as err:  # any surprise in policy evaluation denies
            allowed, reason = False, f"authorization error: {err}"
        if not allowed:
            raise AccessDenied(reason)

    def _app_settings(self) -> AppCallSettings:
        """Where and under which limits to connect to the app: the current config's Sidecar ingress, if any."""
        snapshot = self._state.snapshot
        config = snapshot.config if snapshot is not None else None
        return AppCallSettings.current(config, self._app_port, self._instance_address)

    async def _connect_app(self, settings: AppCallSettings) -> ByteStream:
        """A connection to the app, counted in `_active` (the caller uncounts it when it ends)."""
        limit = settings.max_connections
        if limit and self._active >= limit:
            self.stats.app_overflow += 1
            raise UpstreamOverflow(
                f"the app's connection pool is full ({self._active} connections, tcp.maxConnections)"
            )
        self._active += 1
        try:
            async with asyncio.timeout(settings.connect_timeout):
                if settings.unix_path is not None:
                    reader, writer = await asyncio.open_unix_connection(settings.unix_path)
                else:
                    reader, writer = await asyncio.open_connection(settings.host, settings.port)
        except (OSError, TimeoutError) as err:
            self._active -= 1
            raise UpstreamConnectFailure(f"local app unreachable: {err or 'timeout'}") from err
        except BaseException:
            self._active -= 1
            raise
        return PlainStream(reader, writer)
