"""The connect step both upstream clients share (h1client.py, h2client.py): a TCP connection within the connect
timeout, TLS when a context is given, TCP keepalive, then the far end checked before any request byte is sent:
the cluster's origination rules (origination.py) for an endpoint without identity, else the exact SPIFFE ID pilot
sent for a meshed one. Failures are aiohttp's exception types, as the retry and outlier logic expect."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import aiohttp

from services.proxy.keepalive import Keepalive, apply_to_transport
from services.proxy.tls import PeerIdentityMismatch, peer_spiffe_id

if TYPE_CHECKING:
    from services.proxy.origination import Origination

P = TypeVar("P", bound=asyncio.BaseProtocol)


async def connect_verified(
    factory: Callable[[], P],
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    server_name: str,
    connect_timeout: float,
    keepalive: Keepalive | None,
    origination: Origination | None,
    identity: str | None,
) -> tuple[asyncio.Transport, P]:
    """Connect `factory`'s protocol to host:port and check the far end; raises ConnectionTimeoutError, another
    ClientConnectionError, or PeerIdentityMismatch (the transport aborted)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(connect_timeout):
            transport, protocol = await loop.create_connection(
                factory, host, port, ssl=context, server_hostname=server_name if context else None
            )
    except TimeoutError as err:
        raise aiohttp.ConnectionTimeoutError(
            f"Connection timeout to host {host}:{port} after {connect_timeout}s"
        ) from err
    except (OSError, ssl.SSLError) as err:
        raise aiohttp.ClientConnectionError(f"Cannot connect to host {host}:{port}: {err}") from err
    apply_to_transport(transport, keepalive)
    if origination is not None:
        origination.verify_transport(transport)
    elif identity is not None:
        peer = peer_spiffe_id(transport)
        if peer != identity:
            transport.abort()
            raise PeerIdentityMismatch(
                f"upstream {host}:{port} presented {peer or 'no SPIFFE ID'}, expected {identity}"
            )
    return transport, protocol
