"""Outbound path, app -> mesh: route, pick an endpoint, forward over mTLS (meshed) or plain HTTP, stream back."""

from __future__ import annotations

import asyncio
import logging
import ssl

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from services.proxy.errors import (
    NotReady,
    ProxyError,
    UpstreamConnectFailure,
    UpstreamTimeout,
)
from services.proxy.forward import (
    append_forwarded_for,
    apply_header_operations,
    end_to_end_headers,
    ensure_request_id,
    local_reply,
    relay_response,
    request_body,
)
from services.proxy.router import Decision
from services.proxy.snapshot import ProxyState
from services.proxy.upstream import UpstreamPools
from shared.model.virtual_service import HeaderOperations, Headers

log = logging.getLogger(__name__)


def request_target(request: web.BaseRequest) -> tuple[str, str, int | None]:
    """(authority, path with query, port) from absolute-form (HTTP_PROXY) or origin-form + Host requests."""
    raw = request.raw_path
    if raw.startswith(("http://", "https://")):
        url = URL(raw, encoded=True)
        authority = url.raw_authority or ""
        return authority, url.raw_path_qs or "/", url.explicit_port or url.port
    authority = request.headers.get("Host", "")
    port_text = authority.rpartition(":")[2] if ":" in authority and not authority.endswith("]") else ""
    return authority, raw, int(port_text) if port_text.isdigit() else None


class OutboundHandler:
    """The outbound filter chain for one request, reading the snapshot current when the request starts."""

    def __init__(self, state: ProxyState, pools: UpstreamPools) -> None:
        self._state = state
        self._pools = pools

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        headers = end_to_end_headers(request.headers)
        request_id = ensure_request_id(headers)
        try:
            snapshot = self._state.snapshot
            if snapshot is None:
                raise NotReady("no configuration received yet")
            authority, path, port = request_target(request)
            decision = snapshot.routes.decide(request.method, authority, path, headers, port)
            endpoint = snapshot.balancers.pick(decision.cluster)
            session, ssl_arg = self._pools.session_for(endpoint)
        except ProxyError as err:
            return self._local(request, err, request_id)
        except RuntimeError as err:  # no certificate yet: meshed upstreams are unreachable
            return self._local(request, NotReady(str(err)), request_id)

        headers["Host"] = decision.authority
        append_forwarded_for(headers, request.remote)
        apply_header_operations(
            headers, (_request_ops(decision.route.headers), _request_ops(decision.destination.headers))
        )
        scheme = "https" if endpoint.identity else "http"
        url = URL(f"{scheme}://{_host_literal(endpoint.address)}:{endpoint.port}{decision.path}", encoded=True)
        return await self._forward(request, decision, url, headers, ssl_arg, session, request_id)

    async def _forward(
        self,
        request: web.BaseRequest,
        decision: Decision,
        url: URL,
        headers: CIMultiDict[str],
        ssl_arg: ssl.SSLContext | bool,
        session: aiohttp.ClientSession,
        request_id: str,
    ) -> web.StreamResponse:
        timeout = decision.route.timeout
        try:
            async with asyncio.timeout(timeout):
                upstream = await session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=request_body(request),
                    ssl=ssl_arg,
                    allow_redirects=False,
                )
        except TimeoutError:
            return self._local(request, UpstreamTimeout(f"upstream timed out after {timeout}s"), request_id)
        except aiohttp.ClientError as err:
            failure = UpstreamConnectFailure(f"upstream {url.authority} connect error: {err}")
            return self._local(request, failure, request_id)
        try:
            response_ops = (_response_ops(decision.route.headers), _response_ops(decision.destination.headers))
            return await relay_response(request, upstream, response_ops)
        finally:
            upstream.release()

    @staticmethod
    def _local(request: web.BaseRequest, error: ProxyError, request_id: str) -> web.Response:
        log.info(
            "outbound %s %s%s -> %d %s: %s",
            request.method,
            request.headers.get("Host", ""),
            request.raw_path,
            error.status,
            error.flag,
            error.message,
        )
        return local_reply(error, request_id)


def _host_literal(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _request_ops(headers: Headers | None) -> HeaderOperations | None:
    return headers.request if headers is not None else None


def _response_ops(headers: Headers | None) -> HeaderOperations | None:
    return headers.response if headers is not None else None
