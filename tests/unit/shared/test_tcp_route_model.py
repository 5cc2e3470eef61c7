"""VirtualService `tcp` routes: Istio's TCPRoute field names, and galley errors that name the field path."""

from __future__ import annotations

from typing import Any

from services.galley.sources import Document
from services.galley.validate import validate_document
from shared.model import VirtualService, parse_resource


def _vs(tcp: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"hosts": ["db"], "tcp": tcp},
    }


def _errors(tcp: list[dict[str, Any]]) -> list[str]:
    return validate_document(Document("db.yaml", 1, _vs(tcp)))[1]


def test_tcp_routes_parse_with_istio_names() -> None:
    resource = parse_resource(
        _vs(
            [
                {
                    "match": [{"port": 5432, "sourceLabels": {"app": "billing"}}],
                    "route": [
                        {"destination": {"host": "db", "subset": "primary", "port": {"number": 5432}}, "weight": 90},
                        {"destination": {"host": "db", "subset": "replica"}, "weight": 10},
                    ],
                }
            ]
        )
    )
    assert isinstance(resource, VirtualService)
    route = resource.spec.tcp[0]
    assert route.match[0].port == 5432 and route.match[0].source_labels == {"app": "billing"}
    assert [(d.destination.subset, d.weight) for d in route.route] == [("primary", 90), ("replica", 10)]
    dumped = resource.model_dump(by_alias=True, exclude_defaults=True)
    assert dumped["spec"]["tcp"][0]["match"][0]["sourceLabels"] == {"app": "billing"}


def test_a_tcp_route_needs_a_destination() -> None:
    (error,) = _errors([{"match": [{"port": 5432}]}])
    assert error.startswith("db.yaml: document 1 (VirtualService shop/db): spec.tcp[0].route:")


def test_errors_name_the_field_path() -> None:
    assert any(
        "spec.tcp[0].route[0].weight" in e
        for e in _errors([{"route": [{"destination": {"host": "db"}, "weight": -1}]}])
    )
    assert any(
        "spec.tcp[1].match[0].port" in e
        for e in _errors(
            [
                {"route": [{"destination": {"host": "db"}}]},
                {"match": [{"port": 0}], "route": [{"destination": {"host": "db"}}]},
            ]
        )
    )
    unknown = _errors([{"match": [{"uri": {"prefix": "/"}}], "route": [{"destination": {"host": "db"}}]}])
    assert any("spec.tcp[0].match[0].uri: unknown field" in e for e in unknown)
