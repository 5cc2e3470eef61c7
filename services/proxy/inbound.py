"""Inbound path, mesh -> app: peer authentication (mTLS mode), JWT, AuthorizationPolicy, XFCC, then the local app.

Per request: config snapshot (none yet: 503 NC) -> transport check (plain text on a keep-alive connection
admitted before the mode became STRICT is refused and closed; a TLS peer must carry a SPIFFE ID) ->
request authentication (jwt_authn.py: bad token 401) -> authorization (authz.py: CUSTOM via ext_authz.py,
then DENY, then ALLOW: 403 `RBAC: access denied`) -> `x-forwarded-client-cert: By=<ours>;URI=<peer>` replaces
whatever came in (plain-text callers: removed, they have no identity) -> `127.0.0.1:<app-port>`, streamed.
The per-version parts (compiled JWT rules) are built once per config snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from services.proxy.app_side import LOOPBACK, AppCallSettings, AppSide
from services.proxy.authz import RequestFacts
from services.proxy.errors import AccessDenied, NotReady, ProxyError, UpstreamConnectFailure, UpstreamOverflow
from services.proxy.ext_authz import CheckRequest, ExtAuthzClient, ExtAuthzDenied
from services.proxy.forward import (
    FORWARDED_CLIENT_CERT,
    FORWARDED_PROTO,
    UpstreamResponse,
    append_forwarded_for,
    body_in_memory,
    end_to_end_headers,
    ensure_request_id,
    local_reply,
    relay_response,
    request_body,
    response_headers,
)
from services.proxy.h1client import LeanResponse
from services.proxy.h1server import FastRequest
from services.proxy.h2_names import HTTP2
from services.proxy.jwt_authn import NOBODY, Authenticated, JwksCache, JwtAuthenticator, Unauthenticated
from services.proxy.peek import admits
from services.proxy.request_view import Done, Relayed, Reply, RequestView
from services.proxy.snapshot import ConfigSnapshot, ProxyState
from services.proxy.telemetry.context import RequestFacts as TelemetryFacts
from services.proxy.telemetry.context import reply_metadata
from services.proxy.tls import TlsContexts, peer_spiffe_id
from shared.clock import SYSTEM_CLOCK, Clock
from shared.identity.spiffe import parse_spiffe_id
from shared.model.peer_authentication import MtlsMode
from shared.peer_metadata import PEER_METADATA

if TYPE_CHECKING:
    from services.proxy.h2server import H2Request

log = logging.getLogger(__name__)

MAX_HELD_BODY = 64 * 1024
"""A body up to this size that has already arrived goes to the app from memory (lean client)."""


def forwarded_client_cert(our_spiffe_id: str, peer_spiffe_id: str) -> str:
    """The XFCC value the app sees; any value the caller sent is replaced, never merged."""
    return f"By={our_spiffe_id};URI={peer_spiffe_id}"


@dataclass
class InboundStats:
    """Requests refused by each security stage (counted for the admin page and metrics)."""

    rbac_denied: int = 0
    custom_denied: int = 0
    jwt_rejected: int = 0
    transport_refused: int = 0
    """Requests on a kept-alive connection whose transport (TLS or not) the current mode no longer admits."""
    spiffe_id_refused: int = 0
    """Requests over mTLS whose (verified) client certificate has no SPIFFE ID, or one that does not parse."""
    app_overflow: int = 0
    """Requests answered 503 UO: the app's connection pool (the Sidecar's ingress limits) was full."""


@dataclass(frozen=True)
class _VersionPolicy:
    snapshot: ConfigSnapshot
    jwt: JwtAuthenticator | None
    """None when the version's JWT rules could not be built: every request is refused (fail closed)."""
    mode: MtlsMode
    unrestricted: bool = False
    """No AuthorizationPolicy of any action selects us: every authenticated request is allowed as is."""


class InboundHandler:
    """Authenticates and authorizes each request from another sidecar, then hands it to the app on loopback."""

    def __init__(
        self,
        state: ProxyState,
        tls: TlsContexts,
        app_port: int,
        inbound_port: int,
        clock: Clock = SYSTEM_CLOCK,
        ext_authz: ExtAuthzClient | None = None,
        app_http2: bool = False,
        instance_address: str = LOOPBACK,
    ) -> None:
        """`app_http2`: the app's port speaks HTTP/2 (a grpc or http2 port): it is called over HTTP/2.
        `instance_address`: where a Sidecar ingress listener's `0.0.0.0:PORT` calls the app."""
        self._state = state
        self._tls = tls
        self._app_port = app_port
        self._app_http2 = app_http2
        self._instance_address = instance_address
        self._inbound_port = inbound_port
        self._clock = clock
        self._side = AppSide(AppCallSettings.default(app_port), app_port, app_http2)
        """Where and how the app is called, per the current config's Sidecar ingress (app_side.py)."""
        self._jwks = JwksCache(clock)
        self._ext_authz = ext_authz or ExtAuthzClient({})
        self._version: _VersionPolicy | None = None
        self.stats = InboundStats()

    async def close(self) -> None:
        await self._side.close()
        await self._jwks.close()
        await self._ext_authz.close()

    def mtls_mode(self) -> MtlsMode:
        """The mode for the next connection: the current config's, for our app port; STRICT before any config."""
        snapshot = self._state.snapshot
        if snapshot is None:
            return MtlsMode.STRICT
        return self._policy(snapshot).mode

    def _policy(self, snapshot: ConfigSnapshot) -> _VersionPolicy:
        current = self._version
        if current is not None and current.snapshot is snapshot:
            return current
        inbound = snapshot.config.inbound
        try:
            jwt: JwtAuthenticator | None = JwtAuthenticator(inbound.jwt_rules, self._jwks, self._clock)
        except ValueError as err:
            log.error("config %s: JWT rules unusable, refusing inbound requests: %s", snapshot.version, err)
            jwt = None
        authorizer = snapshot.authorizer
        unrestricted = not (authorizer.custom or authorizer.deny or authorizer.allow or authorizer.audit)
        current = _VersionPolicy(snapshot, jwt, inbound.mode_for_port(self._app_port), unrestricted)
        self._version = current
        settings = AppCallSettings.current(snapshot.config, self._app_port, self._instance_address)
        if settings != self._side.settings:
            retired, self._side = self._side, AppSide(settings, self._app_port, self._app_http2)
            retired.retire()
        return current

    async def __call__(self, request: RequestView) -> Reply:
        headers = end_to_end_headers(request.headers)
        request_id = ensure_request_id(headers)
        try:
            peer = await self._authorize(request, headers)
        except ProxyError as err:
            return self._refused(err, request_id)
        return await self._to_app(request, headers, request_id, peer)

    def immediate(
        self, request: FastRequest, facts: TelemetryFacts | None, done: Done
    ) -> Reply | Awaitable[Reply] | None:
        """The same checks for a whole request of the pass-through front, from its callbacks as far as they go.

        With nothing to wait for (no JWT rule, no CUSTOM AuthorizationPolicy: ALLOW and DENY are decided
        here) and an idle keep-alive connection to the app, the request is written to the app now and the
        whole response is relayed from the app connection's callback, then `done` is called; anything else
        goes on in the general path from where it stands."""
        if self._app_http2:  # an HTTP/2 app: no lean client to it
            return self(request)
        headers = end_to_end_headers(request.headers)
        request_id = ensure_request_id(headers)
        try:
            admitted = self._admit(request)
            policy, peer = admitted
            assert policy.jwt is not None, "admitted only with usable JWT rules"
            side = self._side
            # Checks that wait for an answer, or calls to count against the app's connection pool.
            if policy.jwt.active or policy.snapshot.authorizer.custom or not side.direct:
                return self._checked_to_app(request, headers, request_id, admitted)
            if not policy.unrestricted:
                self._allow(request, policy, self._facts(request, peer, NOBODY))
        except ProxyError as err:
            return self._refused(err, request_id)
        path = self._to_app_headers(request, headers, peer)
        body = request.body()
        own = facts.own_headers if facts is not None and PEER_METADATA in request.headers else ()
        exchange = _AppExchange(self, request, request_id, own, done)
        if not side.pool.send_now(request.method, path, headers, body, None, exchange.answered):
            return self._app_exchange(request, headers, path, body, request_id)
        return None

    async def _checked_to_app(
        self,
        request: RequestView,
        headers: CIMultiDict[str],
        request_id: str,
        admitted: tuple[_VersionPolicy, str | None],
    ) -> Reply:
        try:
            peer = await self._authorize(request, headers, admitted)
        except ProxyError as err:
            return self._refused(err, request_id)
        return await self._to_app(request, headers, request_id, peer)

    def _refused(self, err: ProxyError, request_id: str) -> web.Response:
        if isinstance(err, ExtAuthzDenied):
            self.stats.custom_denied += 1
            if err.status == 403 and not err.body:
                return local_reply(err, request_id)
            return web.Response(status=err.status, text=err.body, headers={"x-request-id": request_id})
        if isinstance(err, Unauthenticated):
            self.stats.jwt_rejected += 1
            reply = local_reply(err, request_id)
            reply.headers["www-authenticate"] = 'Bearer realm="isthmus", error="invalid_token"'
            return reply
        return local_reply(err, request_id)

    def _to_app_headers(self, request: RequestView, headers: CIMultiDict[str], peer: str | None) -> str:
        """XFCC, x-forwarded-proto and -for as the app sees them; returns the path to request."""
        headers.popall(FORWARDED_CLIENT_CERT, None)
        if peer is not None:
            identity = self._tls.identity
            assert identity is not None, "a TLS connection exists only with a certificate"
            headers[FORWARDED_CLIENT_CERT] = forwarded_client_cert(identity.spiffe_id, peer)
        # A caller's own (a gateway's: what its client used) is kept, as Envoy does.
        headers.setdefault(FORWARDED_PROTO, "https" if peer is not None else "http")
        append_forwarded_for(headers, request.remote)
        return request.raw_path if request.raw_path.startswith("/") else request.rel_url.raw_path_qs

    async def _to_app(
        self, request: RequestView, headers: CIMultiDict[str], request_id: str, peer: str | None
    ) -> Reply:
        path = self._to_app_headers(request, headers, peer)
        held = await body_in_memory(request, MAX_HELD_BODY) if request.body_exists else None
        return await self._app_exchange(request, headers, path, held, request_id)

    async def _app_exchange(
        self, request: RequestView, headers: CIMultiDict[str], path: str, held: bytes | None, request_id: str
    ) -> Reply:
        """Call the app within its connection pool's limits (503 UO beyond them) and relay its answer."""
        side = self._side
        breaker = side.breaker
        if breaker is not None:
            try:
                breaker.admit()
            except UpstreamOverflow as err:
                self.stats.app_overflow += 1
                log.info("inbound %s %s -> 503 UO: %s", request.method, request.raw_path, err.message)
                return local_reply(err, request_id)
        side.enter()
        try:
            if side.slots is None:
                return await self._call_app(side, request, headers, path, held, request_id)
            async with side.slots:  # one of tcp.maxConnections calls at a time; the others are pending
                return await self._call_app(side, request, headers, path, held, request_id)
        finally:
            side.leave()
            if breaker is not None:
                breaker.release()

    async def _call_app(
        self,
        side: AppSide,
        request: RequestView,
        headers: CIMultiDict[str],
        path: str,
        held: bytes | None,
        request_id: str,
    ) -> Reply:
        """Call the app (HTTP/2 to an HTTP/2 app; else the lean client for a body in memory or none, aiohttp's
        for a streamed one) and relay."""
        body = request_body(request) if held is None else None
        try:
            upstream: UpstreamResponse
            if side.h2 is not None:
                trailers = cast("H2Request", request).trailers if request.version == HTTP2 else None
                upstream = await side.h2.request(
                    request.method, path, headers, held if body is None else body, None, trailers
                )
            elif body is None:
                upstream = await side.pool.request(request.method, path, headers, held, None)
            else:
                url = URL(f"{side.base_url}{path}", encoded=True)
                upstream = await side.session().request(
                    request.method, url, headers=headers, data=body, allow_redirects=False
                )
        except aiohttp.ClientError as err:
            return self._app_failed(err, request_id)
        try:
            return await relay_response(request, upstream, added_headers=reply_metadata(request.headers))
        finally:
            upstream.release()

    def _app_failed(self, err: BaseException, request_id: str) -> web.Response:
        log.info("local app on %s failed: %s", self._side.settings.address, err)
        return local_reply(UpstreamConnectFailure(f"local app unreachable: {err}"), request_id)

    def _admit(self, request: RequestView) -> tuple[_VersionPolicy, str | None]:
        """The version's policy and the peer's SPIFFE ID (None for plain text) when the transport is admitted;
        raises a ProxyError otherwise (no config yet, a refused transport or peer, unusable JWT rules)."""
        snapshot = self._state.snapshot
        if snapshot is None:
            raise NotReady("no configuration received yet; inbound policy unknown")
        policy = self._policy(snapshot)
        transport = request.transport
        tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        if not admits(policy.mode, tls):  # a kept-alive connection admitted under an older mode
            self.stats.transport_refused += 1
            if transport is not None:
                transport.close()
            raise AccessDenied(f"{'TLS' if tls else 'plain text'} refused: mTLS mode is {policy.mode}")
        peer: str | None = None
        if tls:
            peer = _valid_peer_id(transport)
            if peer is None:
                self.stats.spiffe_id_refused += 1
                raise AccessDenied("peer certificate carries no valid SPIFFE ID")
        if policy.jwt is None:
            raise NotReady("JWT rules of this config version are unusable")
        return policy, peer

    async def _authorize(
        self,
        request: RequestView,
        headers: CIMultiDict[str],
        admitted: tuple[_VersionPolicy, str | None] | None = None,
    ) -> str | None:
        """The peer's SPIFFE ID (None for plain text) when it may call us; raises a ProxyError otherwise.
        `admitted`: what `_admit` found already."""
        policy, peer = admitted if admitted is not None else self._admit(request)
        assert policy.jwt is not None, "admitted only with usable JWT rules"
        if policy.unrestricted and not policy.jwt.active:  # nothing to check: no tokens, no policies
            return peer
        auth = await policy.jwt.authenticate(headers, request.rel_url.raw_query_string)
        if policy.unrestricted:
            return peer
        facts = self._facts(request, peer, auth)
        authorizer = policy.snapshot.authorizer
        try:
            checks = authorizer.custom_checks(facts)
        except Exception as err:  # any surprise in policy evaluation denies
            log.warning("authorization error, denying: %s", err)
            raise AccessDenied(f"authorization error: {err}") from err
        for check in checks:
            await self._ext_authz.check(
                check.provider, check.policy, CheckRequest(request.method, request.raw_path, headers)
            )
        self._allow(request, policy, facts)
        return peer

    def _facts(self, request: RequestView, peer: str | None, auth: Authenticated) -> RequestFacts:
        """What AuthorizationPolicy rules match on, for this request."""
        transport = request.transport
        return RequestFacts(
            peer_spiffe_id=peer,
            source_ip=request.remote or "",
            method=request.method,
            path=request.raw_path,
            host=request.headers.get("Host", ""),
            port=self._inbound_port,
            headers={name.lower(): value for name, value in request.headers.items()},
            request_principal=auth.principal,
            claims=auth.claims,
            sni=self._tls.sni_of(transport),
            destination_ip=_local_ip(transport),
        )

    def _allow(self, request: RequestView, policy: _VersionPolicy, facts: RequestFacts) -> None:
        """DENY then ALLOW policies; raises AccessDenied (also on any error in their evaluation)."""
        try:
            allowed, reason = policy.snapshot.authorizer.allowed(facts)
        except Exception as err:  # any surprise in policy evaluation denies
            log.warning("authorization error, denying: %s", err)
            allowed, reason = False, f"authorization error: {err}"
        if not allowed:
            self.stats.rbac_denied += 1
            log.info(
                "denied %s %s from %s: %s",
                request.method,
                request.raw_path,
                facts.peer_spiffe_id or request.remote,
                reason,
            )
            raise AccessDenied(reason)


def _valid_peer_id(transport: asyncio.BaseTransport | None) -> str | None:
    """The peer certificate's SPIFFE ID if it parses as spiffe://<td>/ns/<ns>/sa/<sa>; None otherwise."""
    try:
        peer = peer_spiffe_id(transport)
        if peer is not None:
            parse_spiffe_id(peer)
    except ValueError:  # InvalidSpiffeId, or an extension the certificate parser rejects
        return None
    return peer


def _local_ip(transport: object) -> str:
    get = getattr(transport, "get_extra_info", None)
    sockname = get("sockname") if get is not None else None
    return str(sockname[0]) if isinstance(sockname, tuple) and sockname else ""


class _AppExchange:
    """An immediate request in flight to the app: a whole response is relayed now, anything else in a task."""

    __slots__ = ("_done", "_handler", "_own", "_request", "_request_id")

    def __init__(
        self,
        handler: InboundHandler,
        request: FastRequest,
        request_id: str,
        own: tuple[tuple[str, str], ...],
        done: Done,
    ) -> None:
        self._handler = handler
        self._request = request
        self._request_id = request_id
        self._own = own
        self._done = done

    def answered(self, outcome: LeanResponse | BaseException) -> None:
        request = self._request
        if isinstance(outcome, BaseException):
            reply = self._handler._app_failed(outcome, self._request_id)
            reply.headers.extend(self._own)
            request.continue_with(_ready(reply), self._done)
            return
        if not outcome.content.is_eof():
            request.continue_with(self._relayed(outcome), self._done)
            return
        relayed: Relayed | None = None
        try:
            headers = response_headers(outcome.headers, added_headers=self._own)
            relayed = request.send_whole(outcome.status, outcome.reason, headers, outcome.content.read_nowait(-1))
        except Exception as err:
            request.fail(err)
        finally:
            outcome.release()
        self._done(relayed)

    async def _relayed(self, upstream: LeanResponse) -> Reply:
        try:
            return await relay_response(self._request, upstream, added_headers=self._own)
        finally:
            upstream.release()


async def _ready(reply: Reply) -> Reply:
    return reply
