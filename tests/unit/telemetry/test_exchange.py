"""Which peer metadata telemetry believes: the certificate decides over mTLS, plain text takes a hint."""

from __future__ import annotations

from services.proxy.telemetry.exchange import PeerBook, claimed_labels, own_headers, own_metadata
from services.proxy.telemetry.labels import UNKNOWN, Workload
from shared.peer_metadata import PEER_METADATA, PEER_METADATA_ID, PeerMetadata, decode

CALLER = "spiffe://cluster.local/ns/shop/sa/orders"
ORDERS = PeerMetadata("shop", "orders-v1", "orders", "orders", "v1").encode()
KNOWN = ("reviews-v1", "shop", "spiffe://cluster.local/ns/shop/sa/reviews", "reviews", "v1")


def test_own_metadata_takes_the_account_from_the_principal() -> None:
    workload = Workload("orders", "shop", "v1", "spiffe://cluster.local/ns/shop/sa/order-runner")
    assert own_metadata(workload) == PeerMetadata("shop", "orders-v1", "order-runner", "orders", "v1")
    headers = dict(own_headers(workload, "orders~x"))
    assert decode(headers[PEER_METADATA]).service_account == "order-runner"
    assert headers[PEER_METADATA_ID] == "orders~x"


def test_mtls_metadata_counts_only_when_it_matches_the_certificate() -> None:
    assert claimed_labels(ORDERS, CALLER) == ("orders-v1", "shop", CALLER, "orders", "v1")
    assert claimed_labels(ORDERS, "spiffe://cluster.local/ns/other/sa/orders") is None
    assert claimed_labels(ORDERS, "spiffe://cluster.local/ns/shop/sa/admin") is None
    assert claimed_labels(ORDERS, "not a spiffe id") is None
    assert claimed_labels("garbage", CALLER) is None
    assert claimed_labels(None, CALLER) is None


def test_plain_text_metadata_is_a_hint_without_principal() -> None:
    assert claimed_labels(ORDERS, None) == ("orders-v1", "shop", UNKNOWN, "orders", "v1")


def test_caller_falls_back_to_the_certificate() -> None:
    book = PeerBook()
    assert book.caller(ORDERS, CALLER)[0] == "orders-v1"
    assert book.caller("garbage", CALLER) == (UNKNOWN, "shop", CALLER, UNKNOWN, UNKNOWN)
    assert book.caller(None, None) == (UNKNOWN,) * 5


def test_callee_falls_back_to_the_endpoint_labels() -> None:
    book = PeerBook()
    callee = PeerMetadata("shop", "reviews-v2", "reviews", "reviews", "v2").encode()
    identity = "spiffe://cluster.local/ns/shop/sa/reviews"
    assert book.callee(callee, identity, KNOWN) == ("reviews-v2", "shop", identity, "reviews", "v2")
    assert book.callee(ORDERS, identity, KNOWN) == KNOWN
    assert book.callee(None, identity, KNOWN) == KNOWN
