"""Last step of both listeners: header hygiene and streaming one request/response pair through, unbuffered."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, cast

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, istr

from services.proxy.errors import ProxyError
from services.proxy.h1server import FastRequest
from services.proxy.h2_names import HTTP2
from services.proxy.request_view import Reply, RequestView
from shared.model.virtual_service import HeaderOperations
from shared.peer_metadata import PEER_METADATA_HEADERS

if TYPE_CHECKING:
    from services.proxy.h2server import H2Request

REQUEST_ID = istr("x-request-id")
"""Header names are case-insensitive multidict keys (`istr`): a lookup does not lower-case them again."""
FORWARDED_FOR = istr("x-forwarded-for")
FORWARDED_CLIENT_CERT = istr("x-forwarded-client-cert")
FORWARDED_PROTO = istr("x-forwarded-proto")
ATTEMPT_COUNT = istr("x-envoy-attempt-count")
"""Set on every upstream attempt (1, 2, ...), as Istio configures Envoy (include_request_attempt_count)."""
RESPONSE_FLAGS = istr("x-isthmus-response-flags")
"""Set only on replies the proxy generates itself, carrying the Envoy-style flag (NR, UH, UF, UT, ...)."""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
HOP_SCOPED = HOP_BY_HOP | PEER_METADATA_HEADERS
"""Never passed on: hop-by-hop headers, and peer metadata (each proxy sends its own, apps never see it)."""
_HOP_SCOPED_KEYS = tuple(istr(name) for name in sorted(HOP_SCOPED))
"""The same names as multidict keys that carry their case-folded form (no lowering per lookup)."""
_CONNECTION = istr("Connection")
CHUNK = 64 * 1024


def end_to_end_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
) -> CIMultiDict[str]:
    """A copy without hop-by-hop headers (any the Connection header names too) or peer metadata."""
    copy = CIMultiDict(headers)
    for value in headers.getall(_CONNECTION, ()):
        for token in value.split(","):
            token = token.strip()
            if token:
                copy.popall(token, None)
    for name in _HOP_SCOPED_KEYS:  # one hashed lookup each: cheaper than lower-casing every header's name
        if name in copy:
            del copy[name]
    return copy


def apply_header_operations(headers: CIMultiDict[str], operations: Iterable[HeaderOperations | None]) -> None:
    for ops in operations:
        if ops is None:
            continue
        for name, value in ops.set.items():
            headers[name] = value
        for name, value in ops.add.items():
            headers.add(name, value)
        for name in ops.remove:
            headers.popall(name, None)


def ensure_request_id(headers: CIMultiDict[str]) -> str:
    request_id = headers.get(REQUEST_ID)
    if not request_id:
        request_id = new_request_id()
        headers[REQUEST_ID] = request_id
    return request_id


class _RequestIds:
    """Random (version 4) UUIDs in text form, made 256 at a time from one os.urandom call."""

    BATCH = 256

    def __init__(self) -> None:
        self._ready: list[str] = []
        os.register_at_fork(after_in_child=self.reset)  # a forked child must not repeat the parent's ids

    def reset(self) -> None:
        self._ready = []

    def take(self) -> str:
        ready = self._ready
        if not ready:
            ready = self._ready = self._batch()
        return ready.pop()

    def _batch(self) -> list[str]:
        raw = bytearray(os.urandom(16 * self.BATCH))
        raw[6::16] = raw[6::16].translate(_VERSION_4)
        raw[8::16] = raw[8::16].translate(_VARIANT)
        digits = raw.hex()
        return [
            f"{digits[i : i + 8]}-{digits[i + 8 : i + 12]}-{digits[i + 12 : i + 16]}-"
            f"{digits[i + 16 : i + 20]}-{digits[i + 20 : i + 32]}"
            for i in range(0, len(digits), 32)
        ]


_VERSION_4 = bytes(byte & 0x0F | 0x40 for byte in range(256))
"""Byte translation table: the UUID version (4) in the high nibble of the seventh byte."""
_VARIANT = bytes(byte & 0x3F | 0x80 for byte in range(256))
"""Byte translation table: the RFC 9562 variant bits (10xx) at the top of the ninth byte."""
new_request_id = _RequestIds().take
"""A random (version 4) UUID in its text form, as str(uuid.uuid4()) gives, without building a UUID object."""


def append_forwarded_for(headers: CIMultiDict[str], remote: str | None) -> None:
    if not remote:
        return
    existing = headers.get(FORWARDED_FOR)
    headers[FORWARDED_FOR] = f"{existing}, {remote}" if existing else remote


def request_body(request: RequestView) -> aiohttp.StreamReader | None:
    """The incoming body as a stream (never read whole), or None when the request has none."""
    return request.content if request.body_exists else None


async def body_in_memory(request: RequestView, limit: int) -> bytes | None:
    """The whole body when it has already arrived (with a Content-Length of at most `limit`), else None: such
    a body goes upstream from memory (lean client, retries allowed) instead of as a stream."""
    length = request.content_length
    if length is None or length > limit or not request.content.is_eof():
        return None
    return await request.read()


def local_reply(error: ProxyError, request_id: str | None = None) -> web.Response:
    headers = {RESPONSE_FLAGS: error.flag}
    if request_id:
        headers[REQUEST_ID] = request_id
    body = error.message if error.status != 403 else "RBAC: access denied"
    return web.Response(status=error.status, text=body, headers=headers)


def answer(
    status: int,
    body: bytes,
    headers: Iterable[tuple[str, str]],
    operations: HeaderOperations | None = None,
) -> web.Response:
    """A response the route itself gives (CORS preflight, redirect, direct response): no response flag."""
    collected: CIMultiDict[str] = CIMultiDict(headers)
    apply_header_operations(collected, (operations,))
    return web.Response(status=status, body=body, headers=collected)


class UpstreamResponse(Protocol):
    """What the relays read of an upstream's response: aiohttp's ClientResponse or h1client's LeanResponse."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def content(self) -> aiohttp.StreamReader: ...

    def release(self) -> object: ...


class _WholeBodyResponse(web.StreamResponse):
    """A relayed response whose body is already in: its headers go out with the body in one write.

    A body still arriving is relayed by a plain StreamResponse instead, which sends the headers at once.
    """

    _send_headers_immediately = False


def response_headers(
    upstream_headers: CIMultiDictProxy[str],
    response_operations: Iterable[HeaderOperations | None] = (),
    extra_headers: Iterable[tuple[str, str]] = (),
    added_headers: Iterable[tuple[str, str]] = (),
) -> CIMultiDict[str]:
    """The upstream's end-to-end headers as relayed: `extra_headers` replace those of the same name,
    `added_headers` go next to them, then the route's and destination's header operations."""
    headers = end_to_end_headers(upstream_headers)
    for name, value in extra_headers:
        headers[name] = value
    for name, value in added_headers:
        headers.add(name, value)
    apply_header_operations(headers, response_operations)
    return headers


async def relay_response(
    request: RequestView,
    upstream: UpstreamResponse,
    response_operations: Iterable[HeaderOperations | None] = (),
    extra_headers: Iterable[tuple[str, str]] = (),
    added_headers: Iterable[tuple[str, str]] = (),
) -> Reply:
    """Send the upstream's status, end-to-end headers and body to our caller as it arrives (in one write when
    the whole body is already in, the usual case for small responses).

    `extra_headers` replace the upstream's headers of the same name; `added_headers` go next to them.
    """
    content = upstream.content
    headers = response_headers(upstream.headers, response_operations, extra_headers, added_headers)
    if isinstance(request, FastRequest):
        return await request.send(upstream.status, upstream.reason, headers, content)
    if request.version == HTTP2:
        trailers = getattr(upstream, "trailers", None)  # an HTTP/2 upstream's (h2client.H2Response)
        return await cast("H2Request", request).send(upstream.status, upstream.reason, headers, content, trailers)
    whole = content.is_eof()
    response_class = _WholeBodyResponse if whole else web.StreamResponse
    response = response_class(status=upstream.status, reason=upstream.reason)
    response.headers.extend(headers)
    await response.prepare(cast(web.BaseRequest, request))  # any other view is aiohttp's own request
    if whole:
        await response.write_eof(content.read_nowait(-1))
        return response
    async for chunk in content.iter_chunked(CHUNK):
        await response.write(chunk)
    await response.write_eof()
    return response
