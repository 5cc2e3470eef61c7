"""A gateway server's request checks before routing: RequestAuthentication (JWT) and AuthorizationPolicy selecting
the gateway workload, as Istio applies them on an ingress gateway.

The same semantics as a sidecar's inbound side (jwt_authn.py, authz.py): a bad token is 401, a missing one
leaves the request without a request principal; CUSTOM (ext_authz.py), then DENY, then ALLOW, and a denial is
403 `RBAC: access denied`. Callers of a gateway come from outside the mesh: there is no peer principal, and
`source.ip` / `remoteIpBlocks` are the client's address; `destination.port` is the server's port. A verified
token's outputs (`outputPayloadToHeader`, the token removed unless `forwardOriginalToken`) are what the
routed request carries. Anything that fails while checking denies. With neither kind of policy selecting the
gateway, requests go straight to routing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from services.proxy.authz import RequestFacts
from services.proxy.errors import AccessDenied, NotReady, ProxyError
from services.proxy.ext_authz import CheckRequest, ExtAuthzClient, ExtAuthzDenied
from services.proxy.forward import REQUEST_ID, local_reply
from services.proxy.h1server import FastRequest
from services.proxy.inbound import InboundStats
from services.proxy.jwt_authn import NOBODY, Authenticated, JwksCache, JwtAuthenticator, Unauthenticated
from services.proxy.outbound import OutboundHandler
from services.proxy.request_view import Done, Reply, RequestView
from services.proxy.snapshot import ConfigSnapshot, SnapshotSource
from services.proxy.telemetry.context import RequestFacts as TelemetryFacts
from shared.clock import Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Policy:
    snapshot: ConfigSnapshot
    jwt: JwtAuthenticator | None
    """None when the version's JWT rules are unusable: requests are refused (503)."""
    open: bool
    """No JWT rule and no AuthorizationPolicy: nothing to check."""
    waits: bool
    """A check answers later (a JWT to verify or a CUSTOM policy to ask)."""


class GatewayGuard:
    """Checks each request of one gateway server, then hands it to the server's routing (an OutboundHandler)."""

    def __init__(
        self,
        state: SnapshotSource,
        port: int,
        handler: OutboundHandler,
        jwks: JwksCache,
        ext_authz: ExtAuthzClient,
        clock: Clock,
        stats: InboundStats,
    ) -> None:
        """`stats`: where refusals are counted (one tally for every server of the gateway)."""
        self._state = state
        self._port = port
        self._handler = handler
        self._jwks = jwks
        self._ext_authz = ext_authz
        self._clock = clock
        self._policy: _Policy | None = None
        self.stats = stats

    def _current(self) -> _Policy | None:
        snapshot = self._state.snapshot
        if snapshot is None:
            return None
        policy = self._policy
        if policy is not None and policy.snapshot is snapshot:
            return policy
        rules = snapshot.config.inbound.jwt_rules
        try:
            jwt: JwtAuthenticator | None = JwtAuthenticator(rules, self._jwks, self._clock)
        except ValueError as err:
            log.error("config %s: JWT rules unusable, refusing gateway requests: %s", snapshot.version, err)
            jwt = None
        authorizer = snapshot.authorizer
        policies = bool(authorizer.custom or authorizer.deny or authorizer.allow or authorizer.audit)
        policy = _Policy(snapshot, jwt, not rules and not policies, bool(rules) or bool(authorizer.custom))
        self._policy = policy
        return policy

    async def __call__(self, request: RequestView) -> Reply:
        policy = self._current()
        if policy is not None and not policy.open:
            try:
                request = await self._checked(request, policy)
            except ProxyError as err:
                return self._refused(err, request)
        return await self._handler(request)

    def immediate(
        self, request: FastRequest, facts: TelemetryFacts | None, done: Done
    ) -> Reply | Awaitable[Reply] | None:
        policy = self._current()
        if policy is None or policy.open:
            return self._handler.immediate(request, facts, done)
        if policy.waits or policy.jwt is None:
            return self(request)
        try:
            self._allow(request, policy, self._facts(request, NOBODY))
        except ProxyError as err:
            return self._refused(err, request)
        return self._handler.immediate(request, facts, done)

    async def _checked(self, request: RequestView, policy: _Policy) -> RequestView:
        """The request as routing gets it (a verified token's outputs applied); raises a ProxyError to refuse."""
        if policy.jwt is None:
            raise NotReady("JWT rules of this config version are unusable")
        headers = CIMultiDict(request.headers)
        auth = await policy.jwt.authenticate(headers, request.rel_url.raw_query_string)
        if auth is not NOBODY:
            request = request.clone(headers=headers)
        facts = self._facts(request, auth)
        try:
            checks = policy.snapshot.authorizer.custom_checks(facts)
        except Exception as err:  # any surprise in policy evaluation denies
            raise AccessDenied(f"authorization error: {err}") from err
        for check in checks:
            await self._ext_authz.check(
                check.provider, check.policy, CheckRequest(request.method, request.raw_path, CIMultiDict(headers))
            )
        self._allow(request, policy, facts)
        return request

    def _facts(self, request: RequestView, auth: Authenticated) -> RequestFacts:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        local = transport.get_extra_info("sockname") if transport is not None else None
        return RequestFacts(
            peer_spiffe_id=None,
            source_ip=request.remote or "",
            method=request.method,
            path=request.raw_path,
            host=request.headers.get("Host", ""),
            port=self._port,
            headers={name.lower(): value for name, value in request.headers.items()},
            request_principal=auth.principal,
            claims=auth.claims,
            sni=(getattr(ssl_object, "server_hostname", None) or "") if ssl_object is not None else "",
            destination_ip=str(local[0]) if isinstance(local, tuple) and local else "",
        )

    def _allow(self, request: RequestView, policy: _Policy, facts: RequestFacts) -> None:
        try:
            allowed, reason = policy.snapshot.authorizer.allowed(facts)
        except Exception as err:  # any surprise in policy evaluation denies
            allowed, reason = False, f"authorization error: {err}"
        if not allowed:
            raise AccessDenied(reason)

    def _refused(self, err: ProxyError, request: RequestView) -> web.Response:
        if isinstance(err, ExtAuthzDenied):
            self.stats.custom_denied += 1
        elif isinstance(err, Unauthenticated):
            self.stats.jwt_rejected += 1
        elif isinstance(err, AccessDenied):
            self.stats.rbac_denied += 1
        log.info("gateway denied %s %s from %s: %s", request.method, request.raw_path, request.remote, err.message)
        request_id = request.headers.get(REQUEST_ID)
        if isinstance(err, ExtAuthzDenied) and (err.status != 403 or err.body):
            return web.Response(status=err.status, text=err.body, headers={REQUEST_ID: request_id or ""})
        reply = local_reply(err, request_id)
        if isinstance(err, Unauthenticated):
            reply.headers["www-authenticate"] = 'Bearer realm="isthmus", error="invalid_token"'
        return reply
