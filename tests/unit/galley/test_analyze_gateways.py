"""ISM0017: a VirtualService bound to gateways only (its `gateways` name no `mesh`)."""

from __future__ import annotations

from typing import Any

from services.galley.analyze import analyze
from shared.model import parse_resource


def virtual_service(gateways: list[str]) -> Any:
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {
                "hosts": ["reviews"],
                "gateways": gateways,
                "http": [{"route": [{"destination": {"host": "reviews"}}]}],
            },
        }
    )


def test_gateway_names_alone_are_reported() -> None:
    assert analyze([virtual_service(["shop/ingress"])]) == [
        "[ISM0017] VirtualService shop/reviews: spec.gateways: ['shop/ingress'] names no 'mesh': it binds the "
        "VirtualService to gateways only, and Isthmus runs no gateways, so no sidecar follows it (add 'mesh' to "
        "the list)"
    ]


def test_mesh_or_no_gateways_are_quiet() -> None:
    assert analyze([virtual_service(["mesh", "shop/ingress"])]) == []
    assert analyze([virtual_service([])]) == []
