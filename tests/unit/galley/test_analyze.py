"""Cross-resource warnings: subsets no DestinationRule defines, several rules or VirtualServices for one host."""

from __future__ import annotations

from typing import Any

from services.galley.analyze import analyze, canonical_host, merged_view
from shared.model import Resource, parse_resource


def vs(name: str, namespace: str, hosts: list[str], subsets: list[str | None]) -> Resource:
    route: list[dict[str, Any]] = [{"destination": {"host": hosts[0], **({"subset": s} if s else {})}} for s in subsets]
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"hosts": hosts, "http": [{"route": route}]},
        }
    )


def dr(name: str, namespace: str, host: str, subsets: list[str]) -> Resource:
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"host": host, "subsets": [{"name": s, "labels": {"version": s}} for s in subsets]},
        }
    )


def test_canonical_host() -> None:
    assert canonical_host("Reviews", "shop") == "reviews.shop"
    assert canonical_host("reviews.shop.svc.cluster.local", "x") == "reviews.shop"
    assert canonical_host("reviews.shop.svc", "x") == "reviews.shop"
    assert canonical_host("api.example.com", "x") == "api.example.com"


def test_subset_without_destination_rule_is_named_with_its_path() -> None:
    warnings = analyze([vs("product", "shop", ["product"], ["v1", "v3"]), dr("product", "shop", "product", ["v1"])])
    assert warnings == [
        "VirtualService shop/product: spec.http[0].route[1].destination.subset: subset 'v3' of host 'product' "
        "is not defined by any DestinationRule; requests routed there fail until one defines it"
    ]


def test_defined_subsets_and_plain_destinations_are_quiet() -> None:
    config = [
        vs("product", "shop", ["product"], ["v1", None]),
        dr("product", "shop", "product.shop.svc.cluster.local", ["v1"]),
    ]
    assert analyze(config) == []


def test_two_rules_for_one_host_say_which_is_used() -> None:
    config = [dr("b", "shop", "product", ["v1"]), dr("a", "shop", "product.shop", ["v1"])]
    assert analyze(config) == [
        "host 'product.shop' has 2 DestinationRules (DestinationRule shop/a, DestinationRule shop/b); "
        "only DestinationRule shop/a is used"
    ]


def test_two_virtual_services_for_one_host_say_which_matches_first() -> None:
    config = [vs("z", "shop", ["product"], [None]), vs("a", "shop", ["product.shop"], [None])]
    (warning,) = analyze(config)
    assert "routed by 2 VirtualServices (VirtualService shop/a, VirtualService shop/z)" in warning
    assert warning.endswith("so VirtualService shop/a matches first")


def test_focus_keeps_only_warnings_about_the_batch() -> None:
    stored = [vs("old", "web", ["cart"], ["v9"])]
    batch = [vs("product", "shop", ["product"], ["v2"])]
    warnings = analyze(merged_view(batch, stored), focus=batch)
    assert len(warnings) == 1 and warnings[0].startswith("VirtualService shop/product:")


def test_merged_view_replaces_stored_with_batch() -> None:
    stored = [dr("product", "shop", "product", ["v1"])]
    batch = [dr("product", "shop", "product", ["v1", "v2"])]
    (only,) = merged_view(batch, stored)
    assert only is batch[0]
