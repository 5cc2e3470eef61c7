"""Cross-resource findings with stable codes: undefined subsets, zero weights, PeerAuthentication conflicts,
hosts and principals the catalog does not know, several rules or VirtualServices for one host."""

from __future__ import annotations

from typing import Any

from services.galley.analyze import Catalog, analyze, analyze_messages, canonical_host, merged_view
from shared.model import DestinationRule, Resource, parse_resource


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
        "[ISM0001] VirtualService shop/product: spec.http[0].route[1].destination.subset: subset 'v3' of host "
        "'product' is not defined by any DestinationRule; requests routed there fail until one defines it"
    ]


def test_defined_subsets_and_plain_destinations_are_quiet() -> None:
    config = [
        vs("product", "shop", ["product"], ["v1", None]),
        dr("product", "shop", "product.shop.svc.cluster.local", ["v1"]),
    ]
    assert analyze(config) == []


def test_two_rules_for_one_host_say_what_their_merge_keeps() -> None:
    config = [dr("b", "shop", "product", ["v1", "v2"]), dr("a", "shop", "product.shop", ["v1"])]
    assert analyze(config) == [
        "[ISM0006] host 'product.shop' has 2 DestinationRules in namespace 'shop' (DestinationRule shop/a, "
        "DestinationRule shop/b); a caller that sees several merges them in name order: no top-level "
        "trafficPolicy; subsets v1, v2; ignored: subset 'v1' of DestinationRule shop/b (defined by "
        "DestinationRule shop/a)"
    ]


def test_rules_in_different_namespaces_follow_the_lookup_path_and_do_not_compete() -> None:
    config = [dr("a", "shop", "product.shop", ["v1"]), dr("b", "web", "product.shop", ["v1"])]
    assert analyze(config) == []


def test_two_virtual_services_for_one_host_say_which_matches_first() -> None:
    config = [vs("z", "shop", ["product"], [None]), vs("a", "shop", ["product.shop"], [None])]
    (warning,) = analyze(config)
    assert "routed by 2 VirtualServices (VirtualService shop/a, VirtualService shop/z)" in warning
    assert warning.endswith("so VirtualService shop/a matches first")


def test_focus_keeps_only_warnings_about_the_batch() -> None:
    stored = [vs("old", "web", ["cart"], ["v9"])]
    batch = [vs("product", "shop", ["product"], ["v2"])]
    warnings = analyze(merged_view(batch, stored), focus=batch)
    assert len(warnings) == 1 and warnings[0].startswith("[ISM0001] VirtualService shop/product:")


def test_merged_view_replaces_stored_with_batch() -> None:
    stored = [dr("product", "shop", "product", ["v1"])]
    batch = [dr("product", "shop", "product", ["v1", "v2"])]
    (only,) = merged_view(batch, stored)
    assert only is batch[0]


def resource(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> Resource:
    group = (
        "security.istio.io/v1" if kind in ("PeerAuthentication", "AuthorizationPolicy") else "networking.istio.io/v1"
    )
    return parse_resource(
        {"apiVersion": group, "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    )


def codes(resources: list[Resource], catalog: Catalog | None = None) -> list[str]:
    return [message.code for message in analyze_messages(resources, catalog=catalog)]


def test_all_zero_weights_leave_the_route_unreachable() -> None:
    route = [{"destination": {"host": "product"}, "weight": 0}, {"destination": {"host": "product"}}]
    spec = {"hosts": ["product"], "http": [{"route": route}]}
    (message,) = analyze_messages([resource("VirtualService", "p", "shop", spec)])
    assert message.code == "ISM0005"
    assert "VirtualService shop/p: spec.http[0].route: every destination has weight 0" in message.text
    single = {"hosts": ["product"], "http": [{"route": [{"destination": {"host": "product"}, "weight": 0}]}]}
    canary = {"hosts": ["product"], "http": [{"route": [route[0], {"destination": {"host": "x"}, "weight": 1}]}]}
    assert codes([resource("VirtualService", "a", "shop", single), resource("VirtualService", "b", "x", canary)]) == []


def test_peer_authentications_with_different_modes_at_one_scope_conflict() -> None:
    strict = resource("PeerAuthentication", "a", "shop", {"mtls": {"mode": "STRICT"}})
    permissive = resource("PeerAuthentication", "b", "shop", {"mtls": {"mode": "PERMISSIVE"}})
    workload = resource(
        "PeerAuthentication", "c", "shop", {"selector": {"matchLabels": {"app": "x"}}, "mtls": {"mode": "DISABLE"}}
    )
    other_namespace = resource("PeerAuthentication", "a", "web", {"mtls": {"mode": "DISABLE"}})
    (message,) = analyze_messages([strict, permissive, workload, other_namespace])
    assert message.code == "ISM0003"
    assert "PeerAuthentication shop/a, PeerAuthentication shop/b" in message.text
    assert "PERMISSIVE, STRICT" in message.text
    same_mode = resource("PeerAuthentication", "b", "shop", {"mtls": {"mode": "STRICT"}})
    assert codes([strict, same_mode]) == []


CATALOG = Catalog(services={"product": "shop", "legacy": "default"}, identities=frozenset({("shop", "order")}))


def test_hosts_missing_from_the_catalog_are_named_with_their_path() -> None:
    spec = {
        "hosts": ["product", "legacy.default.svc.cluster.local"],
        "http": [{"route": [{"destination": {"host": "ghost"}}]}],
    }
    rule = resource("DestinationRule", "d", "shop", {"host": "product.service.consul"})
    messages = analyze_messages([resource("VirtualService", "p", "shop", spec), rule], catalog=CATALOG)
    assert [(m.code, m.text) for m in messages] == [
        (
            "ISM0002",
            "VirtualService shop/p: spec.http[0].route[0].destination.host: host 'ghost' is not a service "
            "in the Consul catalog",
        )
    ]
    assert codes([resource("VirtualService", "p", "shop", spec)]) == []  # no catalog, no catalog checks


def test_principals_no_workload_holds() -> None:
    rules = [
        {"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/order", "cluster.local/ns/shop/sa/ghost"]}}]},
        {"from": [{"source": {"principals": ["cluster.local/ns/shop/*", "*/sa/order", "*"]}}]},
    ]
    policy = resource("AuthorizationPolicy", "allow", "shop", {"action": "ALLOW", "rules": rules})
    (message,) = analyze_messages([policy], catalog=CATALOG)
    assert message.code == "ISM0004"
    assert message.text == (
        "AuthorizationPolicy shop/allow: spec.rules[0].from[0].source.principals[1]: no workload in the catalog "
        "has identity 'cluster.local/ns/shop/sa/ghost'"
    )


def _exported(rule: Resource, *export_to: str) -> Resource:
    assert isinstance(rule, DestinationRule)
    return rule.model_copy(update={"spec": rule.spec.model_copy(update={"export_to": list(export_to)})})


def test_rules_no_caller_sees_together_do_not_compete() -> None:
    config = [
        _exported(dr("a", "shop", "product.shop", ["v1"]), "."),
        _exported(dr("b", "web", "product.shop", ["v1"]), "."),
    ]
    assert analyze(config) == []


def test_a_restricted_rule_still_competes_with_one_every_namespace_sees() -> None:
    config = [_exported(dr("a", "shop", "product.shop", ["v1"]), "."), dr("b", "shop", "product.shop", ["v1"])]
    assert analyze(config) == [
        "[ISM0006] host 'product.shop' has 2 DestinationRules in namespace 'shop' (DestinationRule shop/a, "
        "DestinationRule shop/b); a caller that sees several merges them in name order: no top-level "
        "trafficPolicy; subsets v1; ignored: subset 'v1' of DestinationRule shop/b (defined by DestinationRule shop/a)"
    ]
