"""What the data path tells telemetry about one request in flight: the route chosen and the endpoint picked.

The telemetry wrapper opens a `RequestFacts` for each request in a context variable; the outbound handler
calls `note_route` once routing decided and `note_upstream` with the response it relays, and `ObservedPools`
notes each endpoint a try picks. Both listeners add `own_metadata()` (this proxy's peer metadata headers)
to what they send on: `for_endpoint` adds them to requests for endpoints with a sidecar only, and
`reply_metadata` off responses to callers without one (Istio's IN_MESH mode: the metadata never leaves
the mesh). All are no-ops outside a wrapped request, so the data
path never depends on telemetry being on.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from services.proxy.upstream import UpstreamPools
from shared.model.proxy_config import Endpoint
from shared.peer_metadata import PEER_METADATA

if TYPE_CHECKING:
    from services.proxy.router import Decision

T = TypeVar("T")


class RequestFacts:
    """Filled in while the request runs; read by the wrapper once the response is out."""

    __slots__ = ("cluster", "endpoint", "own_headers", "peer_metadata", "route_name", "tries")

    def __init__(self, own_headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.own_headers = own_headers
        self.cluster: str | None = None
        self.route_name: str | None = None
        self.endpoint: Endpoint | None = None
        self.tries = 0
        self.peer_metadata: str | None = None
        """The upstream's `x-envoy-peer-metadata` response header, read before it is stripped."""


CURRENT: ContextVar[RequestFacts | None] = ContextVar("isthmus_request_facts", default=None)


def note_route(decision: Decision) -> None:
    """Routing picked `decision` for the current request."""
    facts = CURRENT.get()
    if facts is not None:
        facts.cluster = decision.cluster
        facts.route_name = decision.route.name


def own_metadata() -> tuple[tuple[str, str], ...]:
    """This proxy's peer metadata headers, to add to the request or response sent on."""
    facts = CURRENT.get()
    return facts.own_headers if facts is not None else ()


def reply_metadata(request_headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> tuple[tuple[str, str], ...]:
    """This proxy's peer metadata headers for the response to a request, only when the caller sent its own
    (a sidecar): callers outside the mesh learn nothing about this workload (Istio sends it only in mesh)."""
    return own_metadata() if PEER_METADATA in request_headers else ()


def for_endpoint(headers: CIMultiDict[str], endpoint: Endpoint, own: tuple[tuple[str, str], ...]) -> CIMultiDict[str]:
    """`headers` as they go to `endpoint`: with this proxy's peer metadata `own` added (to a copy) for a meshed
    endpoint (it has an identity); unchanged for one outside the mesh, so nothing about this workload reaches
    it. The headers handed on never hold peer metadata themselves (end_to_end_headers drops the caller's)."""
    if not own or not endpoint.identity:
        return headers
    copy = headers.copy()
    copy.extend(own)
    return copy


def note_upstream(headers: CIMultiDictProxy[str]) -> None:
    """The upstream answered with `headers` (before the proxy strips the peer's metadata from them)."""
    facts = CURRENT.get()
    if facts is not None:
        facts.peer_metadata = headers.get(PEER_METADATA)


async def with_facts(work: Awaitable[T], facts: RequestFacts | None) -> T:
    """Await `work` with `facts` as the current request's (a request that went on in a task of its own)."""
    if facts is None:
        return await work
    token = CURRENT.set(facts)
    try:
        return await work
    finally:
        CURRENT.reset(token)


class ObservedPools(UpstreamPools):
    """The upstream pools, noting which endpoint each try of the current request goes to."""

    def session_for(
        self, endpoint: Endpoint, *args: Any, **kwargs: Any
    ) -> tuple[aiohttp.ClientSession, ssl.SSLContext | bool]:
        facts = CURRENT.get()
        if facts is not None:
            facts.endpoint = endpoint
            facts.tries += 1
        return super().session_for(endpoint, *args, **kwargs)
