"""What the rest of the proxy knows of HTTP/2 and gRPC without loading the `h2` library.

The HTTP/2 front and client (h2server.py, h2client.py, on h2base.py) are imported the first time a connection
needs them: a sidecar that only ever speaks HTTP/1.1 does not carry the library (about 1.3 MB resident).
"""

from __future__ import annotations

import aiohttp
from aiohttp import hdrs
from aiohttp.http import HttpVersion
from multidict import CIMultiDict, CIMultiDictProxy

HTTP2 = HttpVersion(2, 0)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""The client connection preface: what an HTTP/2 connection with prior knowledge starts with."""
GRPC_CONTENT_TYPE = "application/grpc"
GRPC_STATUS = "grpc-status"
GRPC_MESSAGE = "grpc-message"

_GRPC_STATUS_OF_HTTP = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
"""Envoy's mapping of an HTTP status to the gRPC status a gRPC client gets for it (grpc_utility.cc)."""
_GRPC_UNKNOWN = 2


class StreamRefused(aiohttp.ClientConnectionError):
    """The server refused the stream before processing it (RST_STREAM REFUSED_STREAM): safe to retry."""


def is_grpc(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> bool:
    return headers.get(hdrs.CONTENT_TYPE, "").startswith(GRPC_CONTENT_TYPE)


def grpc_status_of(http_status: int) -> int:
    return _GRPC_STATUS_OF_HTTP.get(http_status, _GRPC_UNKNOWN)
