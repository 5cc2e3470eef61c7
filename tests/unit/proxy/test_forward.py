"""Header hygiene on both paths: hop-by-hop removal, request ids, forwarded-for, XFCC, route header operations."""

from __future__ import annotations

import uuid

from multidict import CIMultiDict

from services.proxy.forward import (
    append_forwarded_for,
    apply_header_operations,
    end_to_end_headers,
    ensure_request_id,
    new_request_id,
)
from services.proxy.inbound import forwarded_client_cert
from shared.model.virtual_service import HeaderOperations


def test_hop_by_hop_and_connection_named_headers_are_removed() -> None:
    headers = CIMultiDict(
        [
            ("Connection", "keep-alive, X-Secret"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("X-Secret", "1"),
            ("Proxy-Authorization", "Basic x"),
            ("Accept", "text/html"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ]
    )
    kept = end_to_end_headers(headers)
    assert list(kept.items()) == [("Accept", "text/html"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]


def test_every_connection_header_names_headers_to_drop_in_any_case() -> None:
    headers = CIMultiDict(
        [("x-one", "1"), ("CONNECTION", "X-ONE"), ("connection", " x-Two ,"), ("X-Two", "2"), ("X-Three", "3")]
    )
    assert list(end_to_end_headers(headers).items()) == [("X-Three", "3")]


def test_peer_metadata_is_never_passed_on() -> None:
    headers = CIMultiDict([("X-Envoy-Peer-Metadata", "e30="), ("x-envoy-peer-metadata-id", "x"), ("Accept", "*/*")])
    assert list(end_to_end_headers(headers).items()) == [("Accept", "*/*")]


def test_request_id_is_kept_or_generated() -> None:
    given: CIMultiDict[str] = CIMultiDict({"X-Request-Id": "abc"})
    assert ensure_request_id(given) == "abc"
    fresh: CIMultiDict[str] = CIMultiDict()
    generated = ensure_request_id(fresh)
    assert len(generated) == 36 and fresh["x-request-id"] == generated


def test_generated_request_ids_are_distinct_uuid4s_across_entropy_batches() -> None:
    ids = [new_request_id() for _ in range(1000)]  # about four batches of random bytes
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_forwarded_for_appends() -> None:
    headers: CIMultiDict[str] = CIMultiDict({"X-Forwarded-For": "10.0.0.1"})
    append_forwarded_for(headers, "127.0.0.1")
    assert headers["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"


def test_header_operations_set_add_remove() -> None:
    headers: CIMultiDict[str] = CIMultiDict({"a": "1", "drop": "x"})
    apply_header_operations(headers, [HeaderOperations(set={"a": "2"}, add={"b": "3"}, remove=["drop"]), None])
    assert dict(headers) == {"a": "2", "b": "3"}


def test_xfcc_value() -> None:
    assert forwarded_client_cert("spiffe://td/ns/a/sa/b", "spiffe://td/ns/c/sa/d") == (
        "By=spiffe://td/ns/a/sa/b;URI=spiffe://td/ns/c/sa/d"
    )
