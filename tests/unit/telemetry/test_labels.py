"""Istio labels per config version: endpoints and clusters to destination labels, certificates to source labels."""

from __future__ import annotations

from services.proxy.telemetry.labels import (
    MAX_SOURCES,
    UNKNOWN_SERVICE,
    UNKNOWN_WORKLOAD,
    LabelBook,
    Workload,
    peer_labels,
)
from shared.model.proxy_config import Endpoint, ProxyConfig

CONFIG = ProxyConfig.model_validate(
    {
        "proxyId": "p",
        "service": "productpage",
        "namespace": "shop",
        "clusters": [
            {
                "name": "outbound|80||reviews",
                "host": "reviews",
                "port": 80,
                "endpoints": [
                    {
                        "address": "10.0.0.1",
                        "port": 15006,
                        "identity": "spiffe://cluster.local/ns/shop/sa/reviews",
                        "labels": {"app": "reviews", "version": "v2", "namespace": "shop"},
                    },
                    {"address": "10.0.0.9", "port": 8080},
                ],
            }
        ],
    }
)


def test_endpoint_and_cluster_labels() -> None:
    book = LabelBook(CONFIG)
    meshed = CONFIG.clusters[0].endpoints[0]
    assert book.endpoint("outbound|80||reviews", meshed) == (
        "reviews-v2",
        "shop",
        "spiffe://cluster.local/ns/shop/sa/reviews",
        "reviews",
        "v2",
    )
    assert book.endpoint("outbound|80||reviews", CONFIG.clusters[0].endpoints[1]) == UNKNOWN_WORKLOAD
    # Endpoints disagree on the namespace (one has none): unknown, as Istio reports it.
    assert book.service("outbound|80||reviews") == ("reviews", "reviews", "unknown")
    assert book.service(None) == UNKNOWN_SERVICE
    assert book.endpoint(None, meshed) == UNKNOWN_WORKLOAD
    # An endpoint of another version (a config race) is labelled from itself.
    other = Endpoint(address="10.0.0.2", port=1, labels={"app": "reviews", "version": "v3"})
    assert book.endpoint("outbound|80||reviews", other)[4] == "v3"


def test_source_series_start_with_reporter_own_destination_and_service_labels() -> None:
    own = Workload("productpage", "shop", "v1", "spiffe://cluster.local/ns/shop/sa/pp").labels
    book = LabelBook(CONFIG, own)
    meshed = CONFIG.clusters[0].endpoints[0]
    destination, start = book.source("outbound|80||reviews", meshed)
    assert destination == book.endpoint("outbound|80||reviews", meshed)
    assert start == ("source", *own, *destination, "reviews", "reviews", "unknown")
    # Endpoints outside this version, or no route at all, are labelled as `endpoint` and `service` say.
    other = Endpoint(address="10.0.0.2", port=1, labels={"app": "reviews", "version": "v3"})
    destination, start = book.source("outbound|80||reviews", other)
    assert destination[4] == "v3" and start == ("source", *own, *destination, "reviews", "reviews", "unknown")
    assert book.source(None, None) == (UNKNOWN_WORKLOAD, ("source", *own, *UNKNOWN_WORKLOAD, *UNKNOWN_SERVICE))


def test_source_labels_for_a_destination_named_by_its_own_metadata() -> None:
    own = Workload("productpage", "shop", "v1", "spiffe://cluster.local/ns/shop/sa/pp").labels
    book = LabelBook(CONFIG, own)
    claimed = ("reviews-v3", "shop", "spiffe://cluster.local/ns/shop/sa/reviews", "reviews", "v3")
    start = book.source_as("outbound|80||reviews", claimed)
    assert start == ("source", *own, *claimed, "reviews", "reviews", "unknown")
    assert book.source_as("outbound|80||reviews", claimed) is start  # made once
    for index in range(MAX_SOURCES + 1):  # bounded: callees may claim anything
        book.source_as("outbound|80||reviews", (f"w{index}", "shop", "p", "a", "v"))
    assert len(book._answered_as) <= MAX_SOURCES
    assert book.source_as("outbound|80||reviews", claimed) == start


def test_own_and_peer_labels() -> None:
    own = Workload("productpage", "shop", "v1", "spiffe://cluster.local/ns/shop/sa/pp")
    assert own.labels == ("productpage-v1", "shop", "spiffe://cluster.local/ns/shop/sa/pp", "productpage", "v1")
    assert peer_labels("spiffe://cluster.local/ns/web/sa/x") == (
        "unknown",
        "web",
        "spiffe://cluster.local/ns/web/sa/x",
        "unknown",
        "unknown",
    )
    assert peer_labels(None) == UNKNOWN_WORKLOAD
    assert peer_labels("spiffe://weird")[1] == "unknown"
