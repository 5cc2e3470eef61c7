"""Transport security of both listeners: in-memory workload identity -> hot-swappable mTLS contexts and peer checks.

Private keys stay in memory. Python's ssl module only loads a key from a path, so the PEM goes through an
anonymous memory file (memfd_create, opened via /proc/self/fd) that never has a name on disk; where memfd is
unavailable a private 0600 temp file is used and unlinked right after loading.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.tracing import Trace

from shared.identity.spiffe import spiffe_id_of_peer_cert
from shared.peer_metadata import ALPN_PEER_EXCHANGE


@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """Our key, certificate chain (leaf first) and the roots we trust, all PEM, held only in memory.

    Built from an Enrollment, whose enroller checked that the leaf names `spiffe_id` and carries this key;
    OpenSSL checks again that key and chain belong together when the contexts are built (`load_cert_chain`
    raises otherwise, so the swap fails and the identity in use stays)."""

    spiffe_id: str
    key_pem: bytes
    chain_pem: tuple[bytes, ...]
    trust_bundle_pem: bytes
    not_after: float

    def __post_init__(self) -> None:
        if not self.chain_pem:
            raise ValueError("identity: the certificate chain is empty")
        if not self.trust_bundle_pem.strip():
            raise ValueError("identity: the trust bundle is empty")

    def with_trust_bundle(self, bundle_pem: bytes) -> WorkloadIdentity:
        return WorkloadIdentity(self.spiffe_id, self.key_pem, self.chain_pem, bundle_pem, self.not_after)


class PeerIdentityMismatch(aiohttp.ClientConnectionError):
    """The upstream presented a certificate for another SPIFFE ID (or none): the request is never sent."""


@contextlib.contextmanager
def _key_and_chain_file(identity: WorkloadIdentity) -> Iterator[str]:
    material = identity.key_pem + b"\n" + b"\n".join(identity.chain_pem)
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd_create("isthmus-proxy-identity", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, material)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="isthmus-identity-", suffix=".pem")  # created 0600
    try:
        os.write(fd, material)
        os.close(fd)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _load_identity(context: ssl.SSLContext, identity: WorkloadIdentity) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=identity.trust_bundle_pem.decode())
    with _key_and_chain_file(identity) as path:
        context.load_cert_chain(certfile=path, keyfile=path)


def server_context(identity: WorkloadIdentity) -> ssl.SSLContext:
    """Inbound: presents our chain and requires a client certificate that chains to the trust bundle.

    Accepts ALPN `istio-peer-exchange` from a TCP caller that offers it; other callers negotiate no ALPN."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_identity(context, identity)
    context.set_alpn_protocols([ALPN_PEER_EXCHANGE])
    return context


def client_context(identity: WorkloadIdentity) -> ssl.SSLContext:
    """Outbound: presents our chain, verifies the peer's chain; the peer's name is its SPIFFE ID, checked apart."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    _load_identity(context, identity)
    return context


class TlsContexts:
    """The current server and client contexts; `update` swaps both, and only new connections see the change.

    The listener keeps one front context whose SNI callback hands each new handshake the current server
    context, so a renewed certificate takes effect without restarting the listener.
    """

    def __init__(self) -> None:
        self._identity: WorkloadIdentity | None = None
        self._server: ssl.SSLContext | None = None
        self._client: ssl.SSLContext | None = None
        self._tcp_client: ssl.SSLContext | None = None
        self._front: ssl.SSLContext | None = None
        self._sni: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()

    @property
    def identity(self) -> WorkloadIdentity | None:
        return self._identity

    def update(self, identity: WorkloadIdentity) -> None:
        server = server_context(identity)
        client = client_context(identity)
        tcp_client = client_context(identity)
        tcp_client.set_alpn_protocols([ALPN_PEER_EXCHANGE])
        self._identity, self._server, self._client, self._tcp_client = identity, server, client, tcp_client

    def client(self) -> ssl.SSLContext:
        if self._client is None:
            raise RuntimeError("no workload certificate yet: outbound mTLS is unavailable")
        return self._client

    def tcp_client(self) -> ssl.SSLContext:
        """The client context of TCP pass-through: offers ALPN `istio-peer-exchange`."""
        if self._tcp_client is None:
            raise RuntimeError("no workload certificate yet: outbound mTLS is unavailable")
        return self._tcp_client

    def listener_context(self) -> ssl.SSLContext:
        """The context to give the inbound listener once; it follows every later `update`."""
        if self._server is None or self._identity is None:
            raise RuntimeError("no workload certificate yet: the inbound listener cannot start")
        if self._front is None:
            front = server_context(self._identity)
            front.sni_callback = self._select_current
            self._front = front
        return self._front

    def sni_of(self, transport: asyncio.BaseTransport | None) -> str:
        """The server name the peer asked for in its ClientHello ("" for none or plain text)."""
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        return self._sni.get(ssl_object, "") if ssl_object is not None else ""

    def _select_current(self, connection: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        if name:
            self._sni[connection] = name
        current = self._server
        if current is not None and connection.context is not current:
            connection.context = current


_PEER_IDS_KEPT = 1024
_peer_ids: dict[bytes, str | None] = {}
"""SPIFFE ID by peer certificate (DER): decoded once per certificate, not once per connection."""
_peer_by_connection: weakref.WeakKeyDictionary[ssl.SSLObject, str | None] = weakref.WeakKeyDictionary()
"""SPIFFE ID by TLS connection, while the connection lives."""


def peer_spiffe_id(transport: asyncio.BaseTransport | None) -> str | None:
    """The SPIFFE ID in the peer's verified certificate, or None for plain text or a cert without one.

    Read once per TLS connection (the peer's certificate does not change within one), then remembered with
    the connection's SSL object."""
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    try:
        return _peer_by_connection[ssl_object]
    except KeyError:
        pass
    found = _peer_of(ssl_object)
    _peer_by_connection[ssl_object] = found
    return found


def _peer_of(ssl_object: ssl.SSLObject) -> str | None:
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        return _peer_ids[der]
    except KeyError:
        pass
    if len(_peer_ids) >= _PEER_IDS_KEPT:
        _peer_ids.clear()
    found = _peer_ids[der] = spiffe_id_of_peer_cert(ssl_object.getpeercert())
    return found


class SpiffeVerifyingConnector(aiohttp.TCPConnector):
    """A connection pool for upstreams that must prove one SPIFFE ID; checked after the handshake, before use."""

    def __init__(self, expected_identity: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.expected_identity = expected_identity

    async def _create_connection(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109
    ) -> ResponseHandler:
        protocol = await super()._create_connection(req, traces, timeout)
        transport = protocol.transport
        peer = peer_spiffe_id(transport)
        if peer != self.expected_identity:
            if transport is not None:
                transport.abort()
            raise PeerIdentityMismatch(
                f"upstream {req.url.host}:{req.url.port} presented {peer or 'no SPIFFE ID'}, "
                f"expected {self.expected_identity}"
            )
        return protocol
