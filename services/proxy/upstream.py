"""Connection pools to upstreams: one plain-text pool, and one mTLS pool per SPIFFE ID an endpoint must prove."""

from __future__ import annotations

import ssl

import aiohttp

from services.proxy.tls import SpiffeVerifyingConnector, TlsContexts
from shared.model.proxy_config import Endpoint

CONNECT_TIMEOUT = 10.0
# The caller's headers are forwarded as sent; the client must not add its own defaults.
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def _session(connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=_SKIP_AUTO_HEADERS,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
    )


class UpstreamPools:
    """Keep-alive pools keyed by the identity the far end must present (None: plain text, no sidecar)."""

    def __init__(self, tls: TlsContexts) -> None:
        self._tls = tls
        self._plain: aiohttp.ClientSession | None = None
        self._mesh: dict[str, aiohttp.ClientSession] = {}

    def session_for(self, endpoint: Endpoint) -> tuple[aiohttp.ClientSession, ssl.SSLContext | bool]:
        """The pool for this endpoint and the `ssl` argument to request with (the current client context)."""
        if endpoint.identity is None:
            if self._plain is None:
                self._plain = _session(aiohttp.TCPConnector(limit=0))
            return self._plain, False
        session = self._mesh.get(endpoint.identity)
        if session is None:
            session = _session(SpiffeVerifyingConnector(endpoint.identity, limit=0))
            self._mesh[endpoint.identity] = session
        # Passing the context per request keys pooled connections by context, so a renewed
        # certificate is used by every new connection while older ones drain.
        return session, self._tls.client()

    async def close(self) -> None:
        sessions = [*self._mesh.values(), *([self._plain] if self._plain else [])]
        self._mesh.clear()
        self._plain = None
        for session in sessions:
            await session.close()
