"""Inbound path, mesh -> app: mTLS-authenticated peer, AuthorizationPolicy, XFCC, then stream to the local app."""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from yarl import URL

from services.proxy.authz import RequestFacts
from services.proxy.errors import AccessDenied, NotReady, ProxyError, UpstreamConnectFailure
from services.proxy.forward import (
    FORWARDED_CLIENT_CERT,
    append_forwarded_for,
    end_to_end_headers,
    ensure_request_id,
    local_reply,
    relay_response,
    request_body,
)
from services.proxy.snapshot import ProxyState
from services.proxy.tls import TlsContexts, peer_spiffe_id
from services.proxy.upstream import CONNECT_TIMEOUT

log = logging.getLogger(__name__)


def forwarded_client_cert(our_spiffe_id: str, peer_spiffe_id: str) -> str:
    """The XFCC value the app sees; any value the caller sent is replaced, never merged."""
    return f"By={our_spiffe_id};URI={peer_spiffe_id}"


class InboundHandler:
    """Authenticates and authorizes each request from another sidecar, then hands it to the app on loopback."""

    def __init__(self, state: ProxyState, tls: TlsContexts, app_port: int, inbound_port: int) -> None:
        self._state = state
        self._tls = tls
        self._app = f"http://127.0.0.1:{app_port}"
        self._inbound_port = inbound_port
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        headers = end_to_end_headers(request.headers)
        request_id = ensure_request_id(headers)
        try:
            peer = self._authorize(request)
        except ProxyError as err:
            return local_reply(err, request_id)

        identity = self._tls.identity
        assert identity is not None, "inbound listener runs only with a certificate"
        headers.popall(FORWARDED_CLIENT_CERT, None)
        headers[FORWARDED_CLIENT_CERT] = forwarded_client_cert(identity.spiffe_id, peer)
        headers["x-forwarded-proto"] = "https"
        append_forwarded_for(headers, request.remote)
        path = request.raw_path if request.raw_path.startswith("/") else request.rel_url.raw_path_qs
        url = URL(f"{self._app}{path}", encoded=True)
        try:
            upstream = await self._client().request(
                request.method, url, headers=headers, data=request_body(request), allow_redirects=False
            )
        except aiohttp.ClientError as err:
            log.info("local app on %s failed: %s", self._app, err)
            return local_reply(UpstreamConnectFailure(f"local app unreachable: {err}"), request_id)
        try:
            return await relay_response(request, upstream)
        finally:
            upstream.release()

    def _authorize(self, request: web.BaseRequest) -> str:
        """The peer's SPIFFE ID when it may call us; raises AccessDenied or NotReady otherwise (fail closed)."""
        peer = peer_spiffe_id(request.transport)
        if peer is None:
            raise AccessDenied("peer certificate carries no SPIFFE ID")
        snapshot = self._state.snapshot
        if snapshot is None:
            raise NotReady("no configuration received yet; inbound policy unknown")
        facts = RequestFacts(
            peer_spiffe_id=peer,
            source_ip=request.remote or "",
            method=request.method,
            path=request.raw_path,
            host=request.headers.get("Host", ""),
            port=self._inbound_port,
            headers={name.lower(): value for name, value in request.headers.items()},
        )
        try:
            allowed, reason = snapshot.authorizer.allowed(facts)
        except Exception as err:  # any surprise in policy evaluation denies
            log.warning("authorization error, denying: %s", err)
            raise AccessDenied(f"authorization error: {err}") from err
        if not allowed:
            log.info("denied %s %s from %s: %s", request.method, request.raw_path, peer, reason)
            raise AccessDenied(reason)
        return peer
