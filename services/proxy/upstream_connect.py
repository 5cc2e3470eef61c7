"""The connect step both upstream clients share (h1client.py, h2client.py): a TCP connection within the connect
timeout, TLS when a context is given, TCP keepalive, then the far end checked before any request byte is sent:
the cluster's origination rules (origination.py) for an endpoint without identity, else the exact SPIFFE ID pilot
sent for a meshed one. Failures are aiohttp's exception types, as the retry and outlier logic expect."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import aiohttp

from services.proxy.keepalive import Keepalive, apply_to_transport
from services.proxy.tls import PeerIdentityMismatch, peer_spiffe_id

if TYPE_CHECKING:
    from services.proxy.origination import Origination

P = TypeVar("P", bound=asyncio.BaseProtocol)


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """One endpoint as a pool reaches it: where, within what time, and what the far end must prove."""

    host: str
    port: int
    identity: str | None
    """The SPIFFE ID a meshed endpoint must present; None: none checked (plain text, or origination's rules)."""
    connect_timeout: float
    origination: Origination | None = None
    """The cluster's TLS origination for an endpoint without identity (None: mesh or plain)."""
    keepalive: Keepalive | None = None
    """TCP keepalive for its connections (None: the system's defaults)."""
    unix_path: str | None = None
    """A Unix domain socket to connect to instead of host and port (an app behind a Sidecar ingress listener)."""

    @property
    def server_name(self) -> str:
        return self.origination.server_name if self.origination is not None else self.host

    @property
    def authority(self) -> str:
        """The Host (`:authority`) of a request whose headers name none."""
        if self.unix_path is not None:
            return "localhost"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def connect(self, factory: Callable[[], P], context: ssl.SSLContext | None) -> tuple[asyncio.Transport, P]:
        """Connect `factory`'s protocol and check the far end; raises ConnectionTimeoutError, another
        ClientConnectionError, or PeerIdentityMismatch (the transport aborted)."""
        loop = asyncio.get_running_loop()
        host, port = self.host, self.port
        where = f"unix://{self.unix_path}" if self.unix_path is not None else f"host {host}:{port}"
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.unix_path is not None:
                    transport, protocol = await loop.create_unix_connection(factory, self.unix_path)
                else:
                    transport, protocol = await loop.create_connection(
                        factory, host, port, ssl=context, server_hostname=self.server_name if context else None
                    )
        except TimeoutError as err:
            raise aiohttp.ConnectionTimeoutError(
                f"Connection timeout to {where} after {self.connect_timeout}s"
            ) from err
        except (OSError, ssl.SSLError) as err:
            raise aiohttp.ClientConnectionError(f"Cannot connect to {where}: {err}") from err
        apply_to_transport(transport, self.keepalive)
        if self.origination is not None:
            self.origination.verify_transport(transport)
        elif self.identity is not None:
            peer = peer_spiffe_id(transport)
            if peer != self.identity:
                transport.abort()
                raise PeerIdentityMismatch(
                    f"upstream {host}:{port} presented {peer or 'no SPIFFE ID'}, expected {self.identity}"
                )
        return transport, protocol
