"""The request and response types the filter chain works on, whichever server front parsed the request.

Both fronts hand the same handlers a `RequestView`: aiohttp's `web.BaseRequest` (the general path:
WebSockets, streamed and chunked bodies, HTTP/1.0) or the pass-through front's `h1server.FastRequest` (a
whole HTTP/1.1 request parsed by aiohttp's C parser, body already in memory). A handler answers with an
aiohttp response (local replies, route answers, and everything on the general path) or, when the
pass-through front relayed an upstream's response itself, with the `Relayed` record of what it sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import StreamReader, web
from aiohttp.http import HttpVersion
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL


class RequestView(Protocol):
    """What the filter chain and telemetry read of a request (a subset of aiohttp's `web.BaseRequest`)."""

    @property
    def method(self) -> str: ...

    @property
    def raw_path(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def rel_url(self) -> URL: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def version(self) -> HttpVersion: ...

    @property
    def remote(self) -> str | None: ...

    @property
    def transport(self) -> asyncio.Transport | None: ...

    @property
    def body_exists(self) -> bool: ...

    @property
    def content(self) -> StreamReader: ...

    @property
    def content_length(self) -> int | None: ...

    async def read(self) -> bytes: ...

    def clone(self, *, headers: CIMultiDict[str]) -> RequestView: ...


class Relayed:
    """An upstream response the pass-through front already wrote: what telemetry reports of it."""

    __slots__ = ("body_length", "content_length", "grpc_status", "headers", "status")

    prepared = True

    def __init__(
        self,
        status: int,
        headers: CIMultiDict[str],
        content_length: int | None,
        body_length: int,
        grpc_status: str = "",
    ) -> None:
        self.status = status
        self.headers = headers
        self.content_length = content_length
        self.body_length = body_length
        self.grpc_status = grpc_status
        """A gRPC answer's status (from its trailers, or its headers when trailers-only); empty otherwise."""


Reply = web.StreamResponse | Relayed
ViewHandler = Callable[[RequestView], Awaitable[Reply]]
Done = Callable[[Reply | None], None]
"""Called once a request's response is out (None: it failed before one could be written)."""
