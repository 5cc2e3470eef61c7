"""The config model accepts Istio's YAML shape and rejects bad fields with their paths."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from shared.model import DestinationRule, UnknownKind, VirtualService, dump_resource, parse_resource

CANARY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: product, namespace: shop}
spec:
  hosts: [product-service]
  http:
  - match:
    - headers:
        End-User: {exact: jason}
    route:
    - destination: {host: product-service, subset: v2}
  - route:
    - destination: {host: product-service, subset: v1}
      weight: 90
    - destination: {host: product-service, subset: v2}
      weight: 10
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure"}
"""


def test_virtual_service_parses_istio_shape() -> None:
    resource = parse_resource(yaml.safe_load(CANARY))
    assert isinstance(resource, VirtualService)
    first, second = resource.spec.http
    assert first.match[0].headers["end-user"].matches("jason")
    assert not first.match[0].headers["end-user"].matches("jasonx")
    assert [d.weight for d in second.route] == [90, 10]
    assert second.timeout == 1.5
    assert second.retries is not None and second.retries.per_try_timeout == 0.5


def test_dump_round_trips_with_camel_case_and_durations() -> None:
    resource = parse_resource(yaml.safe_load(CANARY))
    data = dump_resource(resource)
    assert data["apiVersion"] == "networking.istio.io/v1"
    assert data["spec"]["http"][1]["retries"]["perTryTimeout"] == "0.5s"
    assert parse_resource(data) == resource


def test_unknown_field_is_named_with_its_path() -> None:
    doc = yaml.safe_load(CANARY)
    doc["spec"]["http"][1]["route"][0]["wieght"] = 5
    with pytest.raises(ValidationError) as info:
        parse_resource(doc)
    locs = [error["loc"] for error in info.value.errors()]
    assert ("spec", "http", 1, "route", 0, "wieght") in locs


def test_bad_duration_and_string_match_are_explained() -> None:
    doc = yaml.safe_load(CANARY)
    doc["spec"]["http"][1]["timeout"] = "soon"
    doc["spec"]["http"][0]["match"][0]["headers"]["End-User"] = {"exact": "a", "prefix": "b"}
    with pytest.raises(ValidationError) as info:
        parse_resource(doc)
    messages = {error["loc"]: error["msg"] for error in info.value.errors()}
    assert "not a duration" in messages[("spec", "http", 1, "timeout")]
    assert "exactly one of exact, prefix or regex" in messages[("spec", "http", 0, "match", 0, "headers", "End-User")]


def test_unknown_kind_lists_supported_kinds() -> None:
    with pytest.raises(UnknownKind, match="VirtualService"):
        parse_resource({"kind": "EnvoyFilter", "apiVersion": "networking.istio.io/v1alpha3"})


def test_destination_rule_rejects_duplicate_subsets() -> None:
    doc = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "product"},
        "spec": {"host": "product-service", "subsets": [{"name": "v1"}, {"name": "v1"}]},
    }
    with pytest.raises(ValidationError, match="defined twice"):
        DestinationRule.model_validate(doc)
