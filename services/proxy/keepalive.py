"""DestinationRule `connectionPool.tcp.tcpKeepalive` on the sockets a sidecar opens to a cluster's endpoints.

SO_KEEPALIVE on, and where set the idle time before the first probe (`time`), the time between probes
(`interval`) and the unanswered probes before the kernel drops the connection (`probes`): Linux's
TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT, in whole seconds (rounded up). Unset fields keep the system's
values. Applied by all three upstream clients: the lean HTTP client and aiohttp's (through its socket
factory) for HTTP, and the TCP outbound listener.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.model.destination_rule import TcpKeepalive

SocketFactory = Callable[[tuple[Any, ...]], socket.socket]


@dataclass(frozen=True, slots=True)
class Keepalive:
    """The options to set, precomputed per cluster policy (compared by value: a pool keyed on it stays)."""

    idle: int | None = None
    interval: int | None = None
    probes: int | None = None

    @classmethod
    def of(cls, settings: TcpKeepalive | None) -> Keepalive | None:
        if settings is None:
            return None
        return cls(
            idle=math.ceil(settings.time) if settings.time is not None else None,
            interval=math.ceil(settings.interval) if settings.interval is not None else None,
            probes=settings.probes,
        )

    def apply(self, sock: Any) -> None:
        """Set the options on a connected or new socket (uvloop's transports hand out a socket-like object)."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (
            (getattr(socket, "TCP_KEEPIDLE", None), self.idle),
            (getattr(socket, "TCP_KEEPINTVL", None), self.interval),
            (getattr(socket, "TCP_KEEPCNT", None), self.probes),
        ):
            if option is not None and value is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)

    def socket_factory(self) -> SocketFactory:
        """For aiohttp's connector: a new socket for an address, with the options set before it connects."""

        def make(address: tuple[Any, ...]) -> socket.socket:
            family, kind, proto = address[0], address[1], address[2]
            sock = socket.socket(family=family, type=kind, proto=proto)
            try:
                self.apply(sock)
            except OSError:
                sock.close()
                raise
            return sock

        return make


def apply_to_transport(transport: Any, keepalive: Keepalive | None) -> None:
    """The options on a connected transport's socket; nothing without keepalive settings."""
    if keepalive is None or transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        keepalive.apply(sock)
