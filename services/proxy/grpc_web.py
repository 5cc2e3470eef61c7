"""gRPC-Web, as Envoy's grpc_web filter does it: a browser's call (HTTP/1.1 or HTTP/2, content type
`application/grpc-web[+proto]`, or `application/grpc-web-text[+proto]` with base64 bodies) goes to an HTTP/2
gRPC endpoint as plain gRPC, and the answer comes back as gRPC-Web: the trailers (`grpc-status`, ...) become a
last frame of the body (flag 0x80, then `name:value\\r\\n` lines), since browsers cannot read HTTP trailers.

The outbound path converts a call only when the endpoint it goes to speaks HTTP/2 (a grpc or http2 port); an
app serving gRPC-Web itself gets the call unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import TYPE_CHECKING

from aiohttp import StreamReader, hdrs
from multidict import CIMultiDict, CIMultiDictProxy

from services.proxy.errors import BadRequest
from services.proxy.h2_names import GRPC_CONTENT_TYPE, GRPC_STATUS

if TYPE_CHECKING:
    from services.proxy.h2client import H2Response

WEB = "application/grpc-web"
TEXT = "application/grpc-web-text"
TRAILER_FLAG = 0x80
_READ_LIMIT = 2**16


def kind_of(content_type: str | None) -> str | None:
    """ "text" (base64 bodies), "binary", or None for a request that is not gRPC-Web."""
    if not content_type or not content_type.startswith(WEB):
        return None
    return "text" if content_type.startswith(TEXT) else "binary"


def to_grpc(headers: CIMultiDict[str], body: bytes, kind: str) -> tuple[CIMultiDict[str], bytes]:
    """The call as plain gRPC: content type and body; raises BadRequest on a -text body that is not base64."""
    converted = headers.copy()
    content_type = converted.get(hdrs.CONTENT_TYPE, WEB)
    suffix = content_type[len(TEXT if kind == "text" else WEB) :]
    converted[hdrs.CONTENT_TYPE] = GRPC_CONTENT_TYPE + suffix
    converted.popall(hdrs.CONTENT_LENGTH, None)
    if kind == "text":
        try:
            body = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as err:
            raise BadRequest(f"gRPC-Web text body is not base64: {err}") from err
    return converted, body


class GrpcWebResponse:
    """An HTTP/2 gRPC answer seen as gRPC-Web: the body relayed as it comes, the trailers appended as a frame."""

    reason = None

    def __init__(self, upstream: H2Response, kind: str, content_type: str) -> None:
        self._upstream = upstream
        self.status = upstream.status
        headers = CIMultiDict(upstream.headers)
        grpc_type = headers.get(hdrs.CONTENT_TYPE, GRPC_CONTENT_TYPE)
        suffix = grpc_type[len(GRPC_CONTENT_TYPE) :] if grpc_type.startswith(GRPC_CONTENT_TYPE) else ""
        headers[hdrs.CONTENT_TYPE] = (TEXT if kind == "text" else WEB) + suffix if suffix else content_type
        headers.popall(hdrs.CONTENT_LENGTH, None)
        self.headers = CIMultiDictProxy(headers)
        self._text = kind == "text"
        loop = asyncio.get_running_loop()
        self._gate = _Gate()
        self.content = StreamReader(self._gate, _READ_LIMIT, loop=loop)  # type: ignore[arg-type]
        self._pump = loop.create_task(self._relay())

    def trailers(self) -> CIMultiDict[str] | None:
        return None  # carried in the body

    async def _relay(self) -> None:
        carry = b""
        try:
            async for chunk in self._upstream.content.iter_any():
                await self._gate.open.wait()  # the caller reads slower than the upstream sends: wait
                if self._text:
                    chunk, carry = _b64_aligned(carry + chunk)
                if chunk:
                    self.content.feed_data(chunk)
            trailers = self._upstream.trailers()
            tail = trailer_frame(trailers) if trailers and GRPC_STATUS not in self.headers else b""
            if self._text:
                tail = base64.b64encode(carry + tail)  # one padded run: the body decodes as a whole
            if tail:
                self.content.feed_data(tail)
            self.content.feed_eof()
        except Exception as err:
            self.content.set_exception(err)

    def release(self) -> None:
        self._pump.cancel()
        self._upstream.release()


def trailer_frame(trailers: CIMultiDict[str]) -> bytes:
    block = "".join(f"{name.lower()}:{value}\r\n" for name, value in trailers.items()).encode("utf-8", "replace")
    return bytes([TRAILER_FLAG]) + len(block).to_bytes(4, "big") + block


def _b64_aligned(data: bytes) -> tuple[bytes, bytes]:
    """Base64 of the longest prefix of `data` whose length is a multiple of 3, and the rest kept for later."""
    cut = len(data) - len(data) % 3
    return base64.b64encode(data[:cut]), data[cut:]


class _Gate:
    """The converted body's flow-control side: closed while the caller's reader holds more than its high-water
    mark, so the relay stops reading the upstream (whose own window then closes) instead of buffering."""

    connected = True

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()

    @property
    def _reading_paused(self) -> bool:
        return not self.open.is_set()

    def pause_reading(self) -> None:
        self.open.clear()

    def resume_reading(self, resume_parser: bool = True) -> None:
        self.open.set()
