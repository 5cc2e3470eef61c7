"""The inbound listeners of a sidecar's further app ports (`--extra-port`): one per port, in front of its own app port.

Each is served like the primary inbound listener: peek.py admits a connection by the PeerAuthentication mode
for that app port (portLevelMtls keyed on it; STRICT before the first config), then an HTTP port's requests go
through an InboundHandler and a TCP port's connections through a TcpInbound, both for that app port.

A listener asked for port 0 binds any free port. Its handlers need the bound port (AuthorizationPolicy
`ports` and `destination.port` compare the inbound port the caller connected to, as on the primary port;
metrics and access logs name the `inbound|<port>||` cluster), so they are built once it is bound, before
its accept loop first runs: `_Bound` stands in for them until then.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from services.proxy.ext_authz import ExtAuthzClient
from services.proxy.inbound import InboundHandler
from services.proxy.peek import PeekingListener, TcpHandler, start_peeking_listener
from services.proxy.request_view import Reply, RequestView, ViewHandler
from services.proxy.snapshot import ProxyState
from services.proxy.tcp_inbound import TcpInbound
from services.proxy.telemetry.observe import Telemetry
from services.proxy.tls import TlsContexts
from shared.clock import Clock
from shared.consul import HTTP2_PROTOCOLS, PROTOCOL_TCP, WorkloadPort
from shared.model.peer_authentication import MtlsMode


@dataclass
class ExtraInbound:
    """One extra app port as served: `port` carries the bound inbound port; exactly one handler is set."""

    port: WorkloadPort
    listener: PeekingListener
    http: InboundHandler | None = None
    tcp: TcpInbound | None = None

    @property
    def name(self) -> str:
        return listener_name(self.port.app_port)

    async def close(self) -> None:
        """Closes the handler's own clients (the listener is closed with the sidecar's other listeners)."""
        if self.http is not None:
            await self.http.close()


def listener_name(app_port: int) -> str:
    return f"inbound-{app_port}"


class _Bound:
    """The listener's handlers until they exist; nothing calls them before `bind` (no await in between)."""

    def __init__(self) -> None:
        self.http: ViewHandler | None = None
        self.tcp: TcpHandler | None = None
        self.mode: Callable[[], MtlsMode] | None = None

    async def serve_http(self, request: RequestView) -> Reply:
        assert self.http is not None, "an extra listener serves only once its handlers are built"
        return await self.http(request)

    async def serve_tcp(self, conn: socket.socket, tls: bool) -> None:
        assert self.tcp is not None, "an extra listener serves only once its handlers are built"
        await self.tcp(conn, tls)

    def mtls_mode(self) -> MtlsMode:
        return self.mode() if self.mode is not None else MtlsMode.STRICT


@dataclass(frozen=True)
class ExtraPortServices:
    """What every extra port's handlers share with the rest of the sidecar."""

    state: ProxyState
    tls: TlsContexts
    telemetry: Telemetry
    clock: Clock
    ext_authz: tuple[tuple[str, str], ...] = ()


async def start_extra_inbound(port: WorkloadPort, address: str, services: ExtraPortServices) -> ExtraInbound:
    """Bind the port's listener, then build its handlers for the bound port."""
    bound = _Bound()
    tcp = port.protocol == PROTOCOL_TCP
    listener = await start_peeking_listener(
        listener_name(port.app_port),
        bound.serve_http,
        address,
        port.inbound_port,
        services.tls.listener_context,
        bound.mtls_mode,
        bound.serve_tcp if tcp else None,
    )
    served = WorkloadPort(port.protocol, port.app_port, listener.port)
    if tcp:
        tcp_inbound = TcpInbound(
            services.state, services.tls, port.app_port, listener.port, services.telemetry, services.clock, address
        )
        bound.tcp, bound.mode = tcp_inbound, tcp_inbound.mtls_mode
        return ExtraInbound(served, listener, tcp=tcp_inbound)
    http = InboundHandler(
        services.state,
        services.tls,
        port.app_port,
        listener.port,
        services.clock,
        ExtAuthzClient(dict(services.ext_authz)),
        port.protocol in HTTP2_PROTOCOLS,
        address,
    )
    bound.http = services.telemetry.inbound(http, listener.port, port.app_port)
    bound.mode = http.mtls_mode
    return ExtraInbound(served, listener, http=http)
