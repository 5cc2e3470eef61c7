"""Validation messages name the source, document, resource, field path and reason; batches are checked whole."""

from __future__ import annotations

from services.galley.sources import Document, Source
from services.galley.validate import format_loc, validate_documents, validate_sources

GOOD_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: product, namespace: shop}
spec:
  hosts: [product]
  http:
  - route:
    - destination: {host: product, subset: v1}
"""

BROKEN = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: product, namespace: shop}
spec:
  hosts: [product]
  http:
  - route:
    - destination: {host: product}
  - route:
    - destination: {host: product, subset: v1}
      weight: -5
      wieght: 3
    timeout: soon
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: FASTEST}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: Bad_Name, namespace: shop}
spec:
  action: ALLOW
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: gw}
spec: {}
"""


def test_every_issue_names_source_document_resource_path_and_reason() -> None:
    result = validate_sources([Source("canary.yaml", BROKEN)])
    assert not result.ok
    errors = set(result.errors)
    assert (
        "canary.yaml: document 1 (VirtualService shop/product): spec.http[1].route[0].weight: "
        "Input should be greater than or equal to 0" in errors
    )
    assert (
        "canary.yaml: document 1 (VirtualService shop/product): spec.http[1].route[0].wieght: unknown field" in errors
    )
    assert any(
        e.startswith("canary.yaml: document 1 (VirtualService shop/product): spec.http[1].timeout: 'soon'")
        for e in errors
    )
    assert any(
        e.startswith(
            "canary.yaml: document 2 (DestinationRule default/reviews): spec.trafficPolicy.loadBalancer.simple:"
        )
        and "ROUND_ROBIN" in e
        for e in errors
    )
    assert any(
        e.startswith("canary.yaml: document 3 (AuthorizationPolicy shop/Bad_Name): metadata.name: 'Bad_Name'")
        for e in errors
    )
    unknown = "canary.yaml: document 4 (EnvoyFilter default/gw): kind: kind 'EnvoyFilter'"
    assert any(e.startswith(unknown) for e in errors)
    assert len(errors) == 6
    assert result.accepted == ()


def test_model_level_reason_loses_pydantic_prefix() -> None:
    doc = GOOD_VS.replace("  - route:\n    - destination: {host: product, subset: v1}\n", "  - timeout: 1s\n")
    result = validate_sources([Source("vs.yaml", doc)])
    assert result.errors == (
        "vs.yaml: document 1 (VirtualService shop/product): spec.http[0]: route: at least one destination is required",
    )


def test_missing_field_and_non_mapping_document() -> None:
    # Without hosts a VirtualService is a delegate, which needs http routes: with neither, hosts is missing.
    doc = GOOD_VS[: GOOD_VS.index("  hosts:")] + "  http: []\n"
    result = validate_sources([Source("a.yaml", doc), Source("b.yaml", "- just\n- a list\n")])
    assert "a.yaml: document 1 (VirtualService shop/product): spec.hosts: required field is missing" in result.errors
    assert any(e.startswith("b.yaml: document 1: kind: a resource must be a mapping") for e in result.errors)


def test_duplicates_within_a_batch_are_reported() -> None:
    result = validate_sources([Source("a.yaml", GOOD_VS), Source("b.yaml", GOOD_VS + "---\n" + GOOD_VS)])
    assert result.errors == (
        "b.yaml: document 1 (VirtualService shop/product): metadata: duplicate of the resource in a.yaml document 1",
        "b.yaml: document 2 (VirtualService shop/product): metadata: duplicate of the resource in a.yaml document 1",
    )


def test_same_name_in_other_kind_or_namespace_is_fine() -> None:
    other_ns = GOOD_VS.replace("namespace: shop", "namespace: web")
    result = validate_sources([Source("a.yaml", GOOD_VS + "---\n" + other_ns)])
    assert result.ok and len(result.resources) == 2


def test_syntax_errors_are_reported_alongside_field_errors() -> None:
    broken_vs = GOOD_VS.replace("hosts: [product]", "hosts: product")  # not a list
    result = validate_sources([Source("bad.yaml", "a: ["), Source("vs.yaml", broken_vs)])
    assert len(result.errors) == 2
    assert result.errors[0].startswith("bad.yaml: line")
    assert result.errors[1].startswith("vs.yaml: document 1 (VirtualService shop/product): spec.hosts:")


def test_empty_batch_is_an_error() -> None:
    assert validate_sources([Source("empty.yaml", "---\n")]).errors == ("no resources found in the given sources",)


def test_format_loc_quotes_map_keys_and_drops_validator_tags() -> None:
    assert format_loc(("spec", "http", 0, "match", 1, "headers", "x-user", "exact")) == (
        'spec.http[0].match[1].headers["x-user"].exact'
    )
    assert format_loc(("spec", "function-after[_check(), float]")) == "spec"
    assert format_loc(()) == "(document)"


def test_validate_documents_keeps_input_order() -> None:
    docs = [
        Document("a", 1, {**_vs("b")}),
        Document("a", 2, {**_vs("a")}),
    ]
    assert [r.metadata.name for r in validate_documents(docs).resources] == ["b", "a"]


def _vs(name: str) -> dict[str, object]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {"hosts": ["h"], "http": [{"route": [{"destination": {"host": "h"}}]}]},
    }
