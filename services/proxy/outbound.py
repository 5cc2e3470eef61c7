"""Outbound path, app -> mesh: route, pick an endpoint, forward over mTLS (meshed), originated TLS (DestinationRule
tls SIMPLE / MUTUAL) or plain HTTP, stream back."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, cast

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from services.proxy import grpc_web
from services.proxy.balancer import ClusterRuntime, ClusterRuntimes, Lease
from services.proxy.cors import ORIGIN
from services.proxy.errors import (
    NotReady,
    ProxyError,
    UpstreamConnectFailure,
    UpstreamTimeout,
)
from services.proxy.faults import NO_FAULT, FaultDecision, decide_fault
from services.proxy.forward import (
    ATTEMPT_COUNT,
    FORWARDED_PROTO,
    UpstreamResponse,
    answer,
    append_forwarded_for,
    apply_header_operations,
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
from services.proxy.h2_names import HTTP2, StreamRefused
from services.proxy.lb import EndpointKey, endpoint_key
from services.proxy.mirror import Mirrors, chosen
from services.proxy.origination import OriginationUnavailable
from services.proxy.redirect import DEFAULT_SCHEME, direct_body, location
from services.proxy.request_view import Done, Relayed, Reply, RequestView
from services.proxy.retry import RetryPolicy
from services.proxy.router import Decision
from services.proxy.snapshot import ConfigSnapshot, SnapshotSource
from services.proxy.telemetry.context import (
    CURRENT,
    RequestFacts,
    for_endpoint,
    note_upstream,
    own_metadata,
    with_facts,
)
from services.proxy.upstream import UpstreamPools
from services.proxy.websocket import HandshakeRefused, is_upgrade
from services.proxy.websocket import relay as relay_websocket
from shared.clock import SYSTEM_CLOCK, Clock
from shared.model.proxy_config import Endpoint
from shared.model.virtual_service import HeaderOperations, Headers
from shared.peer_metadata import PEER_METADATA

if TYPE_CHECKING:
    from services.proxy.h2client import H2Response, Trailers
    from services.proxy.h2server import H2Request

log = logging.getLogger(__name__)

_NONE: frozenset[EndpointKey] = frozenset()


def request_target(request: RequestView) -> tuple[str, str, int | None]:
    """(authority, path with query, port) from absolute-form (HTTP_PROXY) or origin-form + Host requests."""
    raw = request.raw_path
    if raw.startswith(("http://", "https://")):
        url = URL(raw, encoded=True)
        authority = url.raw_authority or ""
        return authority, url.raw_path_qs or "/", url.explicit_port or url.port
    authority = request.headers.get(hdrs.HOST, "")
    port_text = authority.rpartition(":")[2] if ":" in authority and not authority.endswith("]") else ""
    return authority, raw, int(port_text) if port_text.isdigit() else None


MAX_REPLAY_BODY = 64 * 1024
"""Bodies up to this size (with a Content-Length) are held so a retry can resend them; larger ones stream once."""

Body = bytes | aiohttp.StreamReader | None


class OutboundHandler:
    """The outbound filter chain for one request, reading the snapshot current when the request starts.

    route -> CORS preflight -> fault injection -> redirect / direct response -> [WebSocket upgrade: relay] ->
    mirrors (side tasks) -> (retries around: breaker -> pick endpoint -> pool -> upstream call -> outlier
    report) -> stream back.
    """

    def __init__(
        self,
        state: SnapshotSource,
        pools: UpstreamPools,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        locality: str | None = None,
        labels: Mapping[str, str] | None = None,
        edge_scheme: str | None = None,
    ) -> None:
        """`locality` and `labels`: this sidecar's `region/zone/subzone` and its own labels, for
        locality-aware balancing (locality.py). `edge_scheme`: on a gateway server, the scheme clients used
        (`http` or `https`): `x-forwarded-proto` is set to it and redirects without a scheme keep it."""
        self._state = state
        self._pools = pools
        self._clock = clock
        self._rng = rng or random.Random()
        self._runtimes = ClusterRuntimes(clock, self._rng, locality, labels)
        self._runtimes_of: ConfigSnapshot | None = None
        """The snapshot whose clusters the runtimes were last trimmed to."""
        self._mirrors = Mirrors(pools)
        self._edge_scheme = edge_scheme

    @property
    def clusters(self) -> ClusterRuntimes:
        """The clusters' live state (breakers, ejections), e.g. for the admin port."""
        return self._runtimes

    @property
    def mirrors(self) -> Mirrors:
        return self._mirrors

    async def __call__(self, request: RequestView) -> Reply:
        routed = self._route(request, CURRENT.get())
        if not isinstance(routed, _Routed):
            return routed
        return await self._after_route(request, routed)

    def immediate(
        self, request: FastRequest, facts: RequestFacts | None, done: Done
    ) -> Reply | Awaitable[Reply] | None:
        """The same chain for a whole request of the pass-through front, run from its callbacks as far as it can.

        The common request (no fault, mirror or per-try timeout on its route, an idle keep-alive connection to the
        endpoint picked, a whole response that is not retried) is answered without a task: routing, the
        endpoint pick and the request's write happen now, the response is written from the upstream
        connection's callback, then `done` is called. Anything else goes on in the general path, from where
        it stands (a first try already made is handed over with its outcome).
        """
        routed = self._route(request, facts)
        if not isinstance(routed, _Routed):
            return routed
        if routed.fault is not NO_FAULT:
            return self._after_route(request, routed)
        forward = self._prepare(request, routed, facts)
        if not isinstance(forward, _Forward):
            return forward
        if routed.decision.plan.mirrors or forward.policy.per_try_timeout:
            return self._forward(request, forward)
        try:
            return self._first_try(request, forward, facts, done)
        except ProxyError as err:
            return self._local(request, err, routed.request_id)

    def _route(self, request: RequestView, facts: RequestFacts | None) -> _Routed | web.Response:
        """Headers to send on, request id, routing decision and fault decision; or the reply already known."""
        headers = end_to_end_headers(request.headers)
        request_id = ensure_request_id(headers)
        try:
            snapshot = self._state.snapshot
            if snapshot is None:
                raise NotReady("no configuration received yet")
            authority, path, port = request_target(request)
            decision = snapshot.routes.decide(request.method, authority, path, headers, port)
            plan = decision.plan
            if facts is not None:
                facts.cluster = decision.cluster
                facts.route_name = plan.name
            route_response_ops = plan.response_ops
            if decision.cors is not None:
                preflight = decision.cors.preflight(request.method, headers)
                if preflight is not None:
                    return answer(200, b"", preflight, route_response_ops)
            fault = decide_fault(plan.fault, self._rng)
        except ProxyError as err:
            return self._local(request, err, request_id)
        return _Routed(headers, request_id, snapshot, decision, authority, path, route_response_ops, fault)

    async def _after_route(self, request: RequestView, routed: _Routed) -> Reply:
        fault = routed.fault
        if fault.delay > 0:
            await self._clock.sleep(fault.delay)
        if fault.abort is not None:
            return self._local(request, fault.abort, routed.request_id)
        forward = self._prepare(request, routed, CURRENT.get())
        if not isinstance(forward, _Forward):
            return forward
        return await self._forward(request, forward)

    def _prepare(self, request: RequestView, routed: _Routed, facts: RequestFacts | None) -> _Forward | web.Response:
        """A route's own answer (redirect, direct response), or the headers as they go upstream."""
        decision = routed.decision
        headers = routed.headers
        cors_headers = decision.cors.actual(headers.get(ORIGIN)) if decision.cors is not None else []
        plan = decision.plan
        if plan.redirect is not None:
            scheme = self._edge_scheme or DEFAULT_SCHEME
            target = location(plan.redirect, routed.authority, routed.path, decision.port, scheme)
            return answer(plan.redirect.redirect_code, b"", [("Location", target), *cors_headers], routed.response_ops)
        if plan.direct_response is not None:
            body_text = direct_body(plan.direct_response)
            content_type = [("Content-Type", "text/plain")] if body_text else []
            return answer(plan.direct_response.status, body_text, content_type + cors_headers, routed.response_ops)
        destination = decision.destination
        assert destination is not None, "a route that does not answer itself has a destination"
        headers[hdrs.HOST] = decision.authority
        append_forwarded_for(headers, request.remote)
        if self._edge_scheme is not None:
            headers[FORWARDED_PROTO] = self._edge_scheme
        destination_headers = destination.headers
        if plan.request_ops is not None or destination_headers is not None:
            apply_header_operations(headers, (plan.request_ops, _request_ops(destination_headers)))
        runtime = self._runtime(routed.snapshot, destination.cluster)
        response_ops = (routed.response_ops, _response_ops(destination_headers))
        return _Forward(routed, runtime, plan.retry, cors_headers, response_ops)

    def _first_try(
        self, request: FastRequest, forward: _Forward, facts: RequestFacts | None, done: Done
    ) -> Reply | Awaitable[Reply] | None:
        """Send the first try now on an idle connection; else the general path makes every try."""
        runtime = forward.runtime
        routed = forward.routed
        headers = routed.headers
        hash_key, set_cookie = (
            runtime.affinity(headers, request.remote, routed.decision.path.partition("?")[2])
            if runtime.hash_source is not None
            else (None, None)
        )
        lease = Lease.take(runtime, hash_key, frozenset())
        endpoint = lease.endpoint
        try:
            context = self._pools.context_for(endpoint, runtime.pool)
        except RuntimeError as err:  # no certificate yet: meshed upstreams are unreachable
            lease.release()
            raise NotReady(str(err)) from err
        except OriginationUnavailable:
            lease.release()
            raise
        lean = self._pools.lean_for(endpoint, runtime.pool)
        body = request.body()
        headers[ATTEMPT_COUNT] = "1"
        timeout = routed.decision.plan.timeout
        loop = request.loop
        deadline = loop.time() + timeout if timeout is not None else None
        exchange = _Exchange(self, request, forward, lease, hash_key, set_cookie, body, facts, done, deadline)
        abandon = (
            lean.send_now(
                request.method,
                routed.decision.path,
                for_endpoint(headers, endpoint, facts.own_headers if facts is not None else ()),
                body,
                context,
                exchange.answered,
            )
            if lean is not None
            else None
        )
        if abandon is None:  # the general path connects (or uses aiohttp's pool), with this pick
            return self._forward(request, forward, body, _FirstTry(lease, hash_key, set_cookie, None, deadline))
        if deadline is not None:
            exchange.expire_at(loop, deadline, abandon)
        if facts is not None:
            facts.endpoint = endpoint
            facts.tries += 1
        return None

    async def _forward(
        self, request: RequestView, forward: _Forward, body: Body | None = None, first: _FirstTry | None = None
    ) -> Reply:
        """Mirrors, the body, the tries under the route's timeout, and the response relayed back.

        `body`: the request's whole body when the caller already read it; `first`: the first try's outcome when
        it was made on the immediate path."""
        routed = forward.routed
        decision = routed.decision
        headers = routed.headers
        plan = decision.plan
        runtime = forward.runtime
        if type(request) is not FastRequest and (
            (isinstance(request, web.BaseRequest) and is_upgrade(request)) or getattr(request, "websocket", False)
        ):  # an HTTP/1.1 upgrade, or an HTTP/2 extended CONNECT for websocket (RFC 8441)
            return await self._websocket(request, runtime, decision, headers, routed.request_id)
        policy = forward.policy
        mirrors = chosen(plan.mirrors, self._rng) if plan.mirrors else []
        if body is None and first is None and grpc_web.kind_of(headers.get(hdrs.CONTENT_TYPE)) is not None:
            body = await request.read() if request.body_exists else b""  # converted whole (a browser's call)
        if body is not None or first is not None:
            tries = policy.tries
        elif request.body_exists:
            body, tries = await self._body(request, policy, bool(mirrors))
        else:
            body, tries = None, policy.tries
        timeout = plan.timeout
        deadline = first.deadline if first is not None else None
        if first is not None:
            hash_key, set_cookie = first.hash_key, first.set_cookie
        elif runtime.hash_source is not None:
            hash_key, set_cookie = runtime.affinity(headers, request.remote, decision.path.partition("?")[2])
        else:
            hash_key, set_cookie = None, None
        if mirrors and not isinstance(body, aiohttp.StreamReader):
            snapshot = routed.snapshot
            self._mirrors.send(
                lambda name: self._runtime(snapshot, name),
                mirrors,
                request.method,
                decision.path,
                headers,
                body,
                timeout,
            )
        try:
            attempts = self._attempts(request, runtime, decision, headers, body, policy, tries, hash_key, first)
            if timeout is None:
                upstream, lease = await attempts
            else:  # a first try made on the immediate path counts against the same timeout
                async with asyncio.timeout(timeout) if deadline is None else asyncio.timeout_at(deadline):
                    upstream, lease = await attempts
        except TimeoutError:
            return self._local(request, UpstreamTimeout(f"upstream timed out after {timeout}s"), routed.request_id)
        except ProxyError as err:
            return self._local(request, err, routed.request_id)
        note_upstream(upstream.headers)
        try:
            added = [("Set-Cookie", set_cookie)] if set_cookie else []
            return await relay_response(request, upstream, forward.response_ops, forward.cors_headers, added)
        finally:
            upstream.release()
            lease.release()

    async def _websocket(
        self,
        request: RequestView,
        runtime: ClusterRuntime,
        decision: Decision,
        headers: CIMultiDict[str],
        request_id: str,
    ) -> Reply:
        """One upgraded connection: breaker and endpoint as for a request, no retries, held until it closes."""
        try:
            hash_key = runtime.hash_key(headers, request.remote, decision.path.partition("?")[2])
            lease = Lease.take(runtime, hash_key, frozenset())
        except ProxyError as err:
            return self._local(request, err, request_id)
        endpoint = lease.endpoint
        try:
            try:
                session, ssl_arg = self._pools.session_for(endpoint, runtime.pool)
            except RuntimeError as err:
                raise NotReady(str(err)) from err
            url = _url(endpoint, decision.path, ssl_arg is not False)
            headers[ATTEMPT_COUNT] = "1"
            try:
                sent = for_endpoint(headers, endpoint, own_metadata())
                server_name = self._pools.server_name(endpoint, runtime.pool)
                socket = await relay_websocket(request, session, ssl_arg, url, sent, decision.plan.timeout, server_name)
            except HandshakeRefused as err:
                runtime.report(endpoint, err.status)
                raise
            except UpstreamConnectFailure:
                runtime.report(endpoint, None)
                raise
            return socket
        except ProxyError as err:
            return self._local(request, err, request_id)
        finally:
            lease.release()

    def _runtime(self, snapshot: ConfigSnapshot, cluster: str) -> ClusterRuntime:
        if snapshot is not self._runtimes_of:
            self._runtimes.retain(snapshot.routes.clusters)
            self._runtimes_of = snapshot
        return self._runtimes.get(snapshot.routes.clusters[cluster])

    @staticmethod
    async def _body(request: RequestView, policy: RetryPolicy, mirrored: bool) -> tuple[Body, int]:
        """The body to send and how many tries it allows (a streamed body can be sent only once)."""
        if not request.body_exists:
            return None, policy.tries
        held = await body_in_memory(request, MAX_REPLAY_BODY)
        if held is not None:
            return held, policy.tries
        length = request.content_length
        if (policy.tries > 1 or mirrored) and length is not None and length <= MAX_REPLAY_BODY:
            return await request.read(), policy.tries
        return request_body(request), 1

    async def _attempts(
        self,
        request: RequestView,
        runtime: ClusterRuntime,
        decision: Decision,
        headers: CIMultiDict[str],
        body: Body,
        policy: RetryPolicy,
        tries: int,
        hash_key: int | None,
        first: _FirstTry | None = None,
    ) -> tuple[UpstreamResponse, Lease]:
        """The first usable upstream response and its lease; raises the last failure once tries run out.

        Each attempt passes the cluster's circuit breaker (UO), picks an endpoint not tried yet when it can
        (unless retryIgnorePreviousHosts is false; with retryRemoteLocalities, from a locality group not tried
        yet), and reports its outcome to outlier detection. A retry beyond the breaker's maxRetries (or its
        retry budget) is not made.
        """
        failure: ProxyError | None = None
        tried: set[EndpointKey] = set()
        attempt = 0
        retried = False
        for attempt in range(tries):
            if attempt:
                if not runtime.breaker.begin_retry():
                    break
                retried = True
                await self._clock.sleep(policy.backoff(attempt, self._rng))
            try:
                made = first if attempt == 0 else None
                # A first try begun on the immediate path keeps its pick; its outcome goes through the same checks.
                lease = (
                    made.lease
                    if made is not None
                    else Lease.take(
                        runtime,
                        hash_key,
                        tried if policy.ignore_previous_hosts else _NONE,
                        tried if policy.remote_localities else _NONE,
                    )
                )
                endpoint = lease.endpoint
                tried.add(endpoint_key(endpoint))
                outcome = made.outcome if made is not None else None
                if outcome is None:
                    try:
                        session, ssl_arg = self._pools.session_for(endpoint, runtime.pool)
                    except RuntimeError as err:  # no certificate yet: meshed upstreams are unreachable
                        lease.release()
                        raise NotReady(str(err)) from err
                    except OriginationUnavailable:  # the cluster's TLS files did not load: no try can succeed
                        lease.release()
                        raise
                    headers[ATTEMPT_COUNT] = str(attempt + 1)
                last = attempt + 1 == tries
                try:
                    if outcome is not None:
                        if isinstance(outcome, BaseException):
                            raise outcome
                        upstream: UpstreamResponse = outcome
                    else:
                        sent = self._send(
                            request.method,
                            session,
                            ssl_arg,
                            endpoint,
                            runtime,
                            decision.path,
                            headers,
                            body,
                            cast("H2Request", request).trailers if request.version == HTTP2 else None,
                        )
                        if policy.per_try_timeout is None:
                            upstream = await sent
                        else:
                            async with asyncio.timeout(policy.per_try_timeout):
                                upstream = await sent
                except aiohttp.ConnectionTimeoutError:  # tcp.connectTimeout: a connect failure, as in Envoy
                    lease.release()
                    runtime.report(endpoint, None)
                    failure = UpstreamConnectFailure(
                        f"upstream {_authority(endpoint)} connect timeout after {runtime.pool.connect_timeout}s"
                    )
                    retriable = policy.retry_connect_failure()
                except TimeoutError:
                    lease.release()
                    runtime.report(endpoint, None)
                    failure = UpstreamTimeout(
                        f"upstream {_authority(endpoint)} per-try timeout {policy.per_try_timeout}s"
                    )
                    retriable = policy.retry_timeout()
                except aiohttp.ClientError as err:
                    lease.release()
                    runtime.report(endpoint, None)
                    failure = UpstreamConnectFailure(f"upstream {_described(endpoint, runtime)} connect error: {err}")
                    refused = isinstance(err, StreamRefused)
                    retriable = policy.retry_refused_stream() if refused else policy.retry_connect_failure()
                except BaseException:
                    lease.release()
                    raise
                else:
                    runtime.report(endpoint, upstream.status)
                    retry = policy.retry_status(upstream.status) or policy.retry_grpc(upstream.headers)
                    if last or not retry or runtime.breaker.retries_full():
                        return upstream, lease
                    upstream.release()
                    lease.release()
                    continue
            finally:
                if retried:
                    runtime.breaker.end_retry()
                    retried = False
            if last or not retriable:
                break
        assert failure is not None, "the loop ends on a failure or returns a response"
        if attempt > 0:
            failure.flag = f"URX,{failure.flag}"
        raise failure

    def _send(
        self,
        method: str,
        session: aiohttp.ClientSession,
        ssl_arg: ssl.SSLContext | bool,
        endpoint: Endpoint,
        runtime: ClusterRuntime,
        path: str,
        headers: CIMultiDict[str],
        body: Body,
        downstream_trailers: Trailers | None = None,
    ) -> Awaitable[UpstreamResponse]:
        """One try: HTTP/2 to an endpoint that speaks it (with useClientProtocol: when the caller spoke it, which
        `downstream_trailers` says: a downstream HTTP/2 request's, relayed upstream over HTTP/2); else the lean
        client when the body is in memory (or absent) and the pool allows it, else aiohttp."""
        sent = for_endpoint(headers, endpoint, own_metadata())
        pool = runtime.pool
        if downstream_trailers is not None if pool.use_client_protocol else pool.http2(endpoint):
            context = self._pools.h2_context_for(endpoint, runtime.pool)
            h2 = self._pools.h2_for(endpoint, runtime.pool)
            web = grpc_web.kind_of(sent.get(hdrs.CONTENT_TYPE))
            if web is not None and not isinstance(body, aiohttp.StreamReader):
                grpc_headers, grpc_body = grpc_web.to_grpc(sent, body or b"", web)
                call = h2.request(method, path, grpc_headers, grpc_body, context)
                return _as_grpc_web(call, web, sent.get(hdrs.CONTENT_TYPE, grpc_web.WEB))
            return h2.request(method, path, sent, body, context, downstream_trailers)
        lean = None if isinstance(body, aiohttp.StreamReader) else self._pools.lean_for(endpoint, runtime.pool)
        if lean is not None:
            context = ssl_arg if isinstance(ssl_arg, ssl.SSLContext) else None
            return lean.request(method, path, sent, body if isinstance(body, bytes) else None, context)
        url = _url(endpoint, path, ssl_arg is not False)
        server_name = self._pools.server_name(endpoint, runtime.pool)
        return session.request(
            method, url, headers=sent, data=body, ssl=ssl_arg, server_hostname=server_name, allow_redirects=False
        )

    @staticmethod
    def _local(request: RequestView, error: ProxyError, request_id: str) -> web.Response:
        # Absolute-form targets (the app uses us as HTTP_PROXY) already name the host.
        target = request.raw_path
        if "://" not in target:
            target = f"{request.headers.get('Host', '')}{target}"
        log.info(
            "outbound %s %s -> %d %s: %s",
            request.method,
            target,
            error.status,
            error.flag,
            error.message,
        )
        return local_reply(error, request_id)


async def _as_grpc_web(call: Awaitable[H2Response], kind: str, content_type: str) -> UpstreamResponse:
    return grpc_web.GrpcWebResponse(await call, kind, content_type)


def _url(endpoint: Endpoint, path: str, secure: bool) -> URL:
    scheme = "https" if secure else "http"
    return URL(f"{scheme}://{_host_literal(endpoint.address)}:{endpoint.port}{path}", encoded=True)


def _authority(endpoint: Endpoint) -> str:
    return f"{_host_literal(endpoint.address)}:{endpoint.port}"


def _described(endpoint: Endpoint, runtime: ClusterRuntime) -> str:
    """The endpoint in a failure message; with TLS origination, also the cluster and the name verified."""
    origination = runtime.pool.origination
    if origination is None or endpoint.identity is not None:
        return _authority(endpoint)
    return f"{_authority(endpoint)} (cluster {runtime.name}, TLS origination to {origination.server_name})"


def _host_literal(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _request_ops(headers: Headers | None) -> HeaderOperations | None:
    return headers.request if headers is not None else None


def _response_ops(headers: Headers | None) -> HeaderOperations | None:
    return headers.response if headers is not None else None


class _Routed:
    """A request routed: the headers to send on, its id, the decision and the fault drawn for it."""

    __slots__ = ("authority", "decision", "fault", "headers", "path", "request_id", "response_ops", "snapshot")

    def __init__(
        self,
        headers: CIMultiDict[str],
        request_id: str,
        snapshot: ConfigSnapshot,
        decision: Decision,
        authority: str,
        path: str,
        response_ops: HeaderOperations | None,
        fault: FaultDecision,
    ) -> None:
        self.headers = headers
        self.request_id = request_id
        self.snapshot = snapshot
        self.decision = decision
        self.authority = authority
        self.path = path
        self.response_ops = response_ops
        self.fault = fault


class _Forward:
    """A routed request that goes upstream: its cluster's runtime, retry policy and response header changes."""

    __slots__ = ("cors_headers", "policy", "response_ops", "routed", "runtime")

    def __init__(
        self,
        routed: _Routed,
        runtime: ClusterRuntime,
        policy: RetryPolicy,
        cors_headers: list[tuple[str, str]],
        response_ops: tuple[HeaderOperations | None, HeaderOperations | None],
    ) -> None:
        self.routed = routed
        self.runtime = runtime
        self.policy = policy
        self.cors_headers = cors_headers
        self.response_ops = response_ops


class _FirstTry:
    """The first try begun on the immediate path, handed to the general one: its lease and its outcome."""

    __slots__ = ("deadline", "hash_key", "lease", "outcome", "set_cookie")

    def __init__(
        self,
        lease: Lease,
        hash_key: int | None,
        set_cookie: str | None,
        outcome: LeanResponse | BaseException | None,
        deadline: float | None,
    ) -> None:
        """`outcome` None: the endpoint is picked, nothing was sent yet; `deadline`: the route timeout's end
        (loop time), None without one."""
        self.lease = lease
        self.hash_key = hash_key
        self.set_cookie = set_cookie
        self.outcome = outcome
        self.deadline = deadline


class _Exchange:
    """The first try of an immediate request, in flight on an upstream connection."""

    __slots__ = (
        "_body",
        "_deadline",
        "_done",
        "_facts",
        "_forward",
        "_handler",
        "_hash_key",
        "_lease",
        "_request",
        "_set_cookie",
        "_timer",
    )

    def __init__(
        self,
        handler: OutboundHandler,
        request: FastRequest,
        forward: _Forward,
        lease: Lease,
        hash_key: int | None,
        set_cookie: str | None,
        body: bytes | None,
        facts: RequestFacts | None,
        done: Done,
        deadline: float | None,
    ) -> None:
        self._handler = handler
        self._deadline = deadline
        self._timer: asyncio.TimerHandle | None = None
        self._request = request
        self._forward = forward
        self._lease = lease
        self._hash_key = hash_key
        self._set_cookie = set_cookie
        self._body = body
        self._facts = facts
        self._done = done

    def expire_at(self, loop: asyncio.AbstractEventLoop, deadline: float, abandon: Callable[[], None]) -> None:
        """The route timeout: at `deadline` the try is abandoned (its connection closed) and the caller gets 504 UT."""

        def expired() -> None:
            self._timer = None
            abandon()
            self._lease.release()
            routed = self._forward.routed
            timeout = routed.decision.plan.timeout
            reply = self._handler._local(
                self._request, UpstreamTimeout(f"upstream timed out after {timeout}s"), routed.request_id
            )
            try:
                self._request.answer(reply)
            except Exception as err:
                self._request.fail(err)
            self._done(reply)

        self._timer = loop.call_at(deadline, expired)

    def answered(self, outcome: LeanResponse | BaseException) -> None:
        """A whole response that is not retried is relayed now; anything else goes on in the general path."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        forward = self._forward
        policy = forward.policy
        if (
            type(outcome) is not LeanResponse
            or not outcome.content.is_eof()
            or (policy.attempts and policy.retry_status(outcome.status))
        ):
            first = _FirstTry(self._lease, self._hash_key, self._set_cookie, outcome, self._deadline)
            rest = self._handler._forward(self._request, forward, self._body, first)
            self._request.continue_with(with_facts(rest, self._facts), self._done)
            return
        lease = self._lease
        relayed: Relayed | None = None
        try:
            forward.runtime.report(lease.endpoint, outcome.status)
            if self._facts is not None:
                self._facts.peer_metadata = outcome.headers.get(PEER_METADATA)
            added = [("Set-Cookie", self._set_cookie)] if self._set_cookie else []
            headers = response_headers(outcome.headers, forward.response_ops, forward.cors_headers, added)
            relayed = self._request.send_whole(outcome.status, outcome.reason, headers, outcome.content.read_nowait(-1))
        except Exception as err:
            self._request.fail(err)
        finally:
            outcome.release()
            lease.release()
        self._done(relayed)
