"""What the data path tells telemetry about one request in flight: the route chosen and the endpoint picked.

The telemetry wrapper opens a `RequestFacts` for each request in a context variable; the outbound handler
calls `note_route` once routing decided, and `ObservedPools` notes each endpoint a try picks. Both are
no-ops outside a wrapped request, so the data path never depends on telemetry being on.
"""

from __future__ import annotations

import ssl
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import aiohttp

from services.proxy.upstream import UpstreamPools
from shared.model.proxy_config import Endpoint

if TYPE_CHECKING:
    from services.proxy.router import Decision


class RequestFacts:
    """Filled in while the request runs; read by the wrapper once the response is out."""

    __slots__ = ("cluster", "endpoint", "route_name", "tries")

    def __init__(self) -> None:
        self.cluster: str | None = None
        self.route_name: str | None = None
        self.endpoint: Endpoint | None = None
        self.tries = 0


CURRENT: ContextVar[RequestFacts | None] = ContextVar("isthmus_request_facts", default=None)


def note_route(decision: Decision) -> None:
    """Routing picked `decision` for the current request (the outbound handler's one telemetry hook)."""
    facts = CURRENT.get()
    if facts is not None:
        facts.cluster = decision.cluster
        facts.route_name = decision.route.name


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
