"""How HTTP/2 header blocks map to and from the filter chain's headers, and gRPC's view of local replies."""

from __future__ import annotations

from multidict import CIMultiDict

from services.proxy.h2_names import grpc_status_of
from services.proxy.h2base import headers_in, headers_out
from services.proxy.h2server import _percent_encoded


def test_connection_specific_headers_never_go_out_and_names_are_lower_case() -> None:
    headers = CIMultiDict(
        [("Host", "echo"), ("Connection", "keep-alive"), ("Transfer-Encoding", "chunked"), ("TE", "trailers")]
    )
    headers.add("X-Trace", "1")
    headers.add("X-Trace", "2")
    assert headers_out(headers) == [(b"x-trace", b"1"), (b"x-trace", b"2")]


def test_pseudo_headers_are_apart_and_split_cookies_are_joined() -> None:
    pseudo, regular = headers_in(
        [(b":method", b"POST"), (b":path", b"/a?b=1"), (b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"x-id", b"\xff")]
    )
    assert pseudo == {":method": "POST", ":path": "/a?b=1"}
    assert regular["cookie"] == "a=1; b=2"
    assert headers_out(regular)[0] == (b"x-id", b"\xff")  # undecodable bytes go back out unchanged


def test_local_reply_statuses_map_to_grpc_codes_as_envoy_maps_them() -> None:
    assert [grpc_status_of(s) for s in (403, 404, 503, 504, 401, 400, 500)] == [7, 12, 14, 14, 16, 13, 2]


def test_grpc_message_is_percent_encoded() -> None:
    assert _percent_encoded("no route: 100% é") == "no route: 100%25 %C3%A9"
