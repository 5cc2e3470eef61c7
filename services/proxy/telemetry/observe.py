"""The telemetry wrapper around each listener's handler: one record per request, to metrics, log and trace.

Outbound (reporter=source) learns route and endpoint from `context.RequestFacts`; inbound
(reporter=destination) learns the caller from its certificate and its peer metadata header (`exchange.py`
says when that is believed), and the source side likewise reads the callee's metadata from the response.
Inbound local replies (403, 401, 503, ...) carry this proxy's metadata too, for callers that sent theirs.
A reply the proxy made itself
(`web.Response`, carrying the response-flags header) reports its flag; a relayed reply reports "-"
whatever headers it carries. A request that ends without a response (the caller went away) is
recorded with code 0 and flag DC. Every failure inside telemetry is counted and swallowed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import hdrs, web
from multidict import CIMultiDict
from opentelemetry.trace import Span, SpanKind

from services.proxy.forward import REQUEST_ID, RESPONSE_FLAGS, new_request_id
from services.proxy.h1server import FastRequest, ImmediateHandler
from services.proxy.h2_names import GRPC_CONTENT_TYPE, GRPC_STATUS, grpc_status_of
from services.proxy.request_view import Done, Relayed, Reply, RequestView, ViewHandler
from services.proxy.snapshot import ProxyState
from services.proxy.telemetry.access_log import AccessLog, AccessRecord
from services.proxy.telemetry.context import CURRENT, RequestFacts, reply_metadata, with_facts
from services.proxy.telemetry.exchange import PeerBook, own_headers
from services.proxy.telemetry.labels import (
    MUTUAL_TLS,
    NO_TLS,
    REPORTER_DESTINATION,
    UNKNOWN,
    LabelBook,
    Workload,
    WorkloadLabels,
)
from services.proxy.telemetry.metrics import StandardMetrics
from services.proxy.telemetry.tracing import DOWNSTREAM, UPSTREAM, Tracing, peer_attributes
from services.proxy.tls import peer_spiffe_id
from shared.clock import SYSTEM_CLOCK, Clock
from shared.peer_metadata import PEER_METADATA

log = logging.getLogger(__name__)

Handler = ViewHandler
ImmediateWithFacts = Callable[[FastRequest, RequestFacts | None, Done], Reply | Awaitable[Reply] | None]
"""A listener's immediate handler (h1server.ImmediateHandler) given the request's telemetry facts."""
_Record = Callable[[RequestView, Reply | None, RequestFacts, str, float, float], None]
"""Records a request: (request, reply, facts, request id, monotonic start, wall-clock start)."""


_GRPC = GRPC_CONTENT_TYPE
"""Content types starting so are counted as request_protocol "grpc"."""
_Outcome = tuple[int, str, int]
"""(response code, response flags, body bytes sent) of a request."""


def _add_reply_metadata(response: web.StreamResponse, request: RequestView, facts: RequestFacts | None) -> None:
    """A local inbound reply carries this proxy's metadata for callers that sent theirs."""
    if isinstance(response, web.Response) and not response.prepared:
        if facts is not None and PEER_METADATA in request.headers:
            response.headers.extend(facts.own_headers)


async def _with_reply_metadata(rest: Awaitable[Reply], request: RequestView) -> Reply:
    response = await rest
    if type(response) is not Relayed and isinstance(response, web.Response) and not response.prepared:
        response.headers.extend(reply_metadata(request.headers))
    return response


async def _recorded(rest: Awaitable[Reply], finish: Done) -> Reply:
    reply: Reply | None = None
    try:
        reply = await rest
        return reply
    finally:
        finish(reply)


def _outcome(response: Reply | None) -> _Outcome:
    if type(response) is Relayed:  # the common case, tested first (web's types are ABCs)
        length = response.content_length
        return response.status, "-", length if length is not None else response.body_length
    if response is None:
        return 0, "DC", 0
    flags = response.headers.get(RESPONSE_FLAGS, "-") if isinstance(response, web.Response) else "-"
    sent = response.content_length if response.content_length is not None else response.body_length
    return response.status, flags, sent


def _grpc_status(response: Reply | None) -> str:
    """A gRPC call's status: the upstream's (trailers, or headers of a trailers-only answer), or the one a local
    reply stands for (Envoy's mapping of its HTTP status); empty when there is none."""
    if type(response) is Relayed:
        return response.grpc_status
    if isinstance(response, web.Response):
        return response.headers.get(GRPC_STATUS) or str(grpc_status_of(response.status))
    return ""


def _address(request: RequestView, which: str) -> str:
    transport = request.transport
    found = transport.get_extra_info(which) if transport is not None else None
    if isinstance(found, tuple) and len(found) >= 2:
        host = f"[{found[0]}]" if ":" in str(found[0]) else found[0]
        return f"{host}:{found[1]}"
    return "-"


class _InFlight:
    """A request on the immediate path: what its record needs, and the front's `done` to call after it."""

    __slots__ = ("done", "facts", "record", "request", "request_id", "start", "telemetry", "wall")

    def __init__(
        self,
        telemetry: Telemetry,
        record: _Record,
        request: FastRequest,
        facts: RequestFacts,
        request_id: str,
        start: float,
        wall: float,
        done: Done,
    ) -> None:
        self.telemetry = telemetry
        self.record = record
        self.request = request
        self.facts = facts
        self.request_id = request_id
        self.start = start
        self.wall = wall
        self.done = done

    def finish(self, reply: Reply | None) -> None:
        try:
            self.record(self.request, reply, self.facts, self.request_id, self.start, self.wall)
        except Exception as err:
            self.telemetry._failed(err)

    def finished(self, reply: Reply | None) -> None:
        try:  # `finish`, inlined: this is every immediate request's last step
            self.record(self.request, reply, self.facts, self.request_id, self.start, self.wall)
        except Exception as err:
            self.telemetry._failed(err)
        self.done(reply)


class Telemetry:
    """Wraps listener handlers; each part (metrics, access log, tracing) may be None (off)."""

    def __init__(
        self,
        workload: Workload,
        state: ProxyState,
        proxy_id: str,
        metrics: StandardMetrics | None = None,
        access_log: AccessLog | None = None,
        tracing: Tracing | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.workload = workload
        self.metrics = metrics
        self.access_log = access_log
        self.tracing = tracing
        self._state = state
        self._proxy_id = proxy_id
        self._clock = clock
        self._own = workload.labels
        self._book = LabelBook(None, self._own)
        self._book_config: object = None
        self._own_service = workload.service_labels
        self._own_headers = own_headers(workload, proxy_id)
        self._peers = PeerBook()
        self._wants_wall = access_log is not None or tracing is not None
        """Wall-clock start times are read only for the access log's start_time and span timestamps."""

    def _labels(self) -> LabelBook:
        """The label book of the config version now running (rebuilt once per version)."""
        snapshot = self._state.snapshot
        config = snapshot.config if snapshot is not None else None
        if config is not self._book_config:
            self._book = LabelBook(config, self._own)
            self._book_config = config
        return self._book

    def _begin(self, request: RequestView, kind: SpanKind) -> tuple[RequestView, Span | None, str]:
        """The request to hand on (with a request id and this hop's trace headers) and the span opened."""
        request_id = request.headers.get(REQUEST_ID, "")
        if self.tracing is None and (request_id or self.access_log is None):
            # Without spans or log lines nothing here records the id; the handler gives the request one.
            return request, None, request_id
        headers = CIMultiDict(request.headers)
        if not request_id:
            request_id = headers[REQUEST_ID] = new_request_id()
        span = None
        if self.tracing is not None:
            name = f"{request.headers.get('Host', '')}{request.path}"
            span = self.tracing.start(kind, name, request.headers, headers)
        return request.clone(headers=headers), span, request_id

    def outbound(self, handler: Handler) -> Handler:
        async def observed(request: RequestView) -> Reply:
            start = self._clock.monotonic()
            wall = self._clock.wall() if self._wants_wall else 0.0
            try:
                request, span, request_id = self._begin(request, SpanKind.CLIENT)
            except Exception as err:
                self._failed(err)
                return await handler(request)
            facts = RequestFacts(self._own_headers)
            token = CURRENT.set(facts)
            response: Reply | None = None
            try:
                response = await handler(request)
                return response
            finally:
                CURRENT.reset(token)
                try:
                    self._finish_outbound(request, response, facts, request_id, start, wall, span)
                except Exception as err:
                    self._failed(err)

        return observed

    def outbound_immediate(self, handler: ImmediateWithFacts) -> ImmediateHandler | None:
        """The outbound handler for requests the pass-through front answers from its callbacks, recorded as
        `outbound` records them; None with tracing on (its spans follow the request through tasks)."""

        return self._immediate(handler, SpanKind.CLIENT, self._finish_outbound)

    def inbound_immediate(
        self, handler: ImmediateWithFacts, inbound_port: int, app_port: int
    ) -> ImmediateHandler | None:
        """`inbound` for requests the pass-through front answers from its callbacks (None with tracing on)."""
        cluster = f"inbound|{inbound_port}||"
        app = f"127.0.0.1:{app_port}"

        def record(
            request: RequestView, reply: Reply | None, facts: RequestFacts, request_id: str, start: float, wall: float
        ) -> None:
            self._finish_inbound(request, reply, None, request_id, start, wall, cluster, app)

        def metadata_added(
            request: FastRequest, facts: RequestFacts | None, done: Done
        ) -> Reply | Awaitable[Reply] | None:
            outcome = handler(request, facts, done)
            if outcome is None or isinstance(outcome, Relayed):
                return outcome
            if isinstance(outcome, web.StreamResponse):
                _add_reply_metadata(outcome, request, facts)
                return outcome
            return _with_reply_metadata(outcome, request)

        return self._immediate(metadata_added, SpanKind.SERVER, record)

    def _immediate(self, handler: ImmediateWithFacts, kind: SpanKind, record: _Record) -> ImmediateHandler | None:
        if self.tracing is not None:
            return None

        def observed(request: FastRequest, done: Done) -> Reply | Awaitable[Reply] | None:
            start = self._clock.monotonic()
            wall = self._clock.wall() if self._wants_wall else 0.0
            if self.access_log is None:  # no span either here: only the log needs the request to carry an id
                request_id = request.headers.get(REQUEST_ID, "")
            else:
                try:
                    begun, _, request_id = self._begin(request, kind)
                except Exception as err:
                    self._failed(err)
                    return handler(request, None, done)
                request = cast(FastRequest, begun)  # a clone of a FastRequest is one
            facts = RequestFacts(self._own_headers)
            flight = _InFlight(self, record, request, facts, request_id, start, wall, done)
            outcome = handler(request, facts, flight.finished)
            if outcome is None:  # in flight: recorded by `finished`
                return None
            if isinstance(outcome, Relayed | web.StreamResponse):
                flight.finish(outcome)
                return outcome
            return _recorded(with_facts(outcome, facts), flight.finish)

        return observed

    def inbound(self, handler: Handler, inbound_port: int, app_port: int) -> Handler:
        cluster = f"inbound|{inbound_port}||"
        app = f"127.0.0.1:{app_port}"

        async def observed(request: RequestView) -> Reply:
            start = self._clock.monotonic()
            wall = self._clock.wall() if self._wants_wall else 0.0
            try:
                request, span, request_id = self._begin(request, SpanKind.SERVER)
            except Exception as err:
                self._failed(err)
                return await handler(request)
            token = CURRENT.set(RequestFacts(self._own_headers))
            response: Reply | None = None
            try:
                response = await handler(request)
                if type(response) is not Relayed and isinstance(response, web.Response) and not response.prepared:
                    response.headers.extend(reply_metadata(request.headers))
                return response
            finally:
                CURRENT.reset(token)
                try:
                    self._finish_inbound(request, response, span, request_id, start, wall, cluster, app)
                except Exception as err:
                    self._failed(err)

        return observed

    def _failed(self, err: Exception) -> None:
        log.debug("telemetry record dropped: %s", err)
        if self.metrics is not None:
            self.metrics.dropped.inc()

    def _finish_outbound(
        self,
        request: RequestView,
        response: Reply | None,
        facts: RequestFacts,
        request_id: str,
        start: float,
        wall: float,
        span: Span | None = None,
    ) -> None:
        elapsed_ms = (self._clock.monotonic() - start) * 1000.0
        outcome = code, flags, sent = _outcome(response)
        received = request.content.total_bytes if request.body_exists else 0
        book = self._labels()
        endpoint = facts.endpoint
        if facts.peer_metadata and endpoint is not None:
            destination = book.endpoint(facts.cluster, endpoint)
            destination = self._peers.callee(facts.peer_metadata, endpoint.identity, destination)
            source_labels = book.source_as(facts.cluster, destination)
        else:
            destination, source_labels = book.source(facts.cluster, endpoint)
        if self.metrics is not None:
            if request.headers.get(hdrs.CONTENT_TYPE, "").startswith(_GRPC):
                labels = (*source_labels, "grpc", str(code), _grpc_status(response), flags, UNKNOWN)
            else:
                labels = (*source_labels, "http", str(code), "", flags, UNKNOWN)
            self.metrics.record_http(labels, elapsed_ms, received, sent)
        if span is None and self.access_log is None:
            return
        upstream = f"{facts.endpoint.address}:{facts.endpoint.port}" if facts.endpoint else "-"
        if span is not None and self.tracing is not None:
            attributes: dict[str, str | int] = {
                "http.method": request.method,
                "http.url": f"http://{request.headers.get('Host', '')}{request.raw_path}",
                "upstream_cluster": facts.cluster or "-",
                "response_flags": flags,
                "guid:x-request-id": request_id,
                "peer.address": upstream,
                **peer_attributes(UPSTREAM, destination),
            }
            self.tracing.finish(span, code, attributes)
        if self.access_log is not None:
            self.access_log.log(
                self._record(
                    request,
                    outcome,
                    received,
                    elapsed_ms,
                    wall,
                    request_id,
                    upstream,
                    facts.cluster or "-",
                    facts.route_name or "default",
                    upstream_peer=destination,
                )
            )

    def _finish_inbound(
        self,
        request: RequestView,
        response: Reply | None,
        span: Span | None,
        request_id: str,
        start: float,
        wall: float,
        cluster: str,
        app: str,
    ) -> None:
        elapsed_ms = (self._clock.monotonic() - start) * 1000.0
        outcome = code, flags, sent = _outcome(response)
        received = request.content.total_bytes if request.body_exists else 0
        caller = self._peers.caller(request.headers.get(PEER_METADATA), peer_spiffe_id(request.transport))
        if self.metrics is not None:
            tls = request.transport is not None and request.transport.get_extra_info("ssl_object") is not None
            labels = (
                REPORTER_DESTINATION,
                *caller,
                *self._own,
                *self._own_service,
                *(
                    ("grpc", str(code), _grpc_status(response))
                    if request.headers.get(hdrs.CONTENT_TYPE, "").startswith(_GRPC)
                    else ("http", str(code), "")
                ),
                flags,
                MUTUAL_TLS if tls else NO_TLS,
            )
            self.metrics.record_http(labels, elapsed_ms, received, sent)
        if span is not None and self.tracing is not None:
            attributes: dict[str, str | int] = {
                "http.method": request.method,
                "http.url": f"https://{request.headers.get('Host', '')}{request.raw_path}",
                "upstream_cluster": cluster,
                "response_flags": flags,
                "guid:x-request-id": request_id,
                "peer.address": request.remote or "-",
                **peer_attributes(DOWNSTREAM, caller),
            }
            self.tracing.finish(span, code, attributes)
        if self.access_log is not None:
            self.access_log.log(
                self._record(
                    request,
                    outcome,
                    received,
                    elapsed_ms,
                    wall,
                    request_id,
                    app,
                    cluster,
                    "default",
                    downstream_peer=caller,
                )
            )

    @staticmethod
    def _record(
        request: RequestView,
        outcome: _Outcome,
        received: int,
        elapsed_ms: float,
        wall: float,
        request_id: str,
        upstream_host: str,
        upstream_cluster: str,
        route_name: str,
        downstream_peer: WorkloadLabels | None = None,
        upstream_peer: WorkloadLabels | None = None,
    ) -> AccessRecord:
        headers = request.headers
        code, flags, sent = outcome
        return AccessRecord(
            start_time=wall,
            method=request.method,
            path=request.raw_path,
            protocol=f"HTTP/{request.version.major}.{request.version.minor}",
            response_code=code,
            response_flags=flags,
            bytes_received=received,
            bytes_sent=sent,
            duration_ms=int(elapsed_ms),
            x_forwarded_for=headers.get("X-Forwarded-For", ""),
            user_agent=headers.get("User-Agent", ""),
            request_id=request_id,
            authority=headers.get("Host", ""),
            upstream_host=upstream_host,
            upstream_cluster=upstream_cluster,
            downstream_local_address=_address(request, "sockname"),
            downstream_remote_address=_address(request, "peername"),
            route_name=route_name,
            downstream_peer=downstream_peer,
            upstream_peer=upstream_peer,
        )
