"""Sidecar model: the egress subset parses, Istio's host format holds and what Isthmus cannot honour is refused."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from pydantic import ValidationError

from services.galley.sources import Document
from services.galley.validate import validate_document
from shared.model import Sidecar, dump_resource, parse_resource

BASE: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Sidecar",
    "metadata": {"name": "default", "namespace": "shop"},
    "spec": {"egress": [{"hosts": ["./*", "isthmus-system/*", "*/API.example.com", "~/*", "*/*.example.com"]}]},
}


def doc(**spec: Any) -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    document["spec"].update(spec)
    for key in [key for key, value in spec.items() if value is None]:
        del document["spec"][key]
    return document


def sidecar(**spec: Any) -> Sidecar:
    resource = parse_resource(doc(**spec))
    assert isinstance(resource, Sidecar)
    return resource


def errors(**spec: Any) -> str:
    resource, found = validate_document(Document("sidecar.yaml", 1, doc(**spec)))
    assert resource is None
    return "\n".join(found)


def test_istio_shape_parses_and_round_trips() -> None:
    parsed = sidecar(workloadSelector={"labels": {"app": "order"}}, outboundTrafficPolicy={"mode": "REGISTRY_ONLY"})
    assert parsed.spec.egress_hosts == ("./*", "isthmus-system/*", "*/api.example.com", "~/*", "*/*.example.com")
    assert parsed.spec.workload_selector is not None and parsed.spec.workload_selector.labels == {"app": "order"}
    dumped = dump_resource(parsed)
    assert dumped["spec"]["workloadSelector"] == {"labels": {"app": "order"}}
    assert parse_resource(dumped) == parsed


def test_outbound_traffic_policy_alone_is_a_sidecar_without_egress_limit() -> None:
    assert sidecar(egress=None, outboundTrafficPolicy={"mode": "REGISTRY_ONLY"}).spec.egress_hosts is None


def test_empty_configuration_is_refused() -> None:
    with pytest.raises(ValidationError, match="empty configuration"):
        sidecar(egress=None)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("reviews.shop", "namespace/dnsName"),
        ("/reviews.shop", "cannot be empty"),
        ("shop/", "cannot be empty"),
        ("Shop/reviews.shop", "invalid namespace 'Shop'"),
        ("shop/reviews", "short names"),
        ("shop/*reviews.shop", "leading '\\*.'"),
        ("shop/reviews.*.shop", "leading '\\*.'"),
        ("shop/re_views.shop", "not a DNS name"),
    ],
)
def test_egress_host_format_follows_istio(host: str, message: str) -> None:
    found = errors(egress=[{"hosts": ["./*", host]}])
    assert "spec.egress[0].hosts[1]" in found
    assert re.search(message, found), found


def test_egress_listener_needs_hosts() -> None:
    assert "spec.egress[0].hosts" in errors(egress=[{"hosts": []}])
    assert "spec.egress[0].hosts" in errors(egress=[{}])


@pytest.mark.parametrize(
    ("listener", "field", "message"),
    [
        ({"port": {"number": 9080, "protocol": "HTTP", "name": "http"}}, "port", "per-port"),
        ({"bind": "127.0.0.1"}, "bind", "bind is not supported"),
        ({"captureMode": "NONE"}, "captureMode", "does not capture traffic"),
    ],
)
def test_listener_fields_are_refused(listener: dict[str, Any], field: str, message: str) -> None:
    found = errors(egress=[{"hosts": ["./*"], **listener}])
    assert f"spec.egress[0].{field}" in found and message in found, found


def test_more_than_one_egress_listener_is_refused() -> None:
    found = errors(egress=[{"hosts": ["./*"]}, {"hosts": ["*/*"]}])
    assert "spec.egress" in found and "2 egress listeners" in found and "one listener" in found


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"ingress": [{"port": {"number": 80}}]}, "spec.ingress", "ingress is not supported"),
        ({"inboundConnectionPool": {"http": {}}}, "spec.inboundConnectionPool", "no pool settings"),
        ({"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}, "spec.outboundTrafficPolicy.mode", "404 NR"),
        (
            {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY", "egressProxy": {"host": "egress.example.com"}}},
            "spec.outboundTrafficPolicy.egressProxy",
            "egressProxy is not supported",
        ),
        ({"workloadSelector": {"labels": {}}}, "spec.workloadSelector.labels", "every workload"),
        ({"workloadSelector": {"labels": {"app": "ord*"}}}, "spec.workloadSelector.labels", "wildcards"),
        ({"workloadSelector": {"matchLabels": {"app": "x"}}}, "spec.workloadSelector", ""),
    ],
)
def test_refused_fields_name_their_path(spec: dict[str, Any], field: str, message: str) -> None:
    found = errors(**spec)
    assert field in found and message in found, found
