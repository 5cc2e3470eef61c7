"""ISM0017: a VirtualService naming a gateway that no Gateway resource defines."""

from __future__ import annotations

from typing import Any

from services.galley.analyze import Catalog, analyze, analyze_messages
from shared.model import parse_resource

INGRESS: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "ingress", "namespace": "shop"},
    "spec": {"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]},
}


def virtual_service(gateways: list[str], block_gateways: list[str] | None = None) -> Any:
    match = [{"uri": {"prefix": "/"}, "gateways": block_gateways}] if block_gateways else []
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {
                "hosts": ["reviews"],
                "gateways": gateways,
                "http": [{"match": match, "route": [{"destination": {"host": "reviews"}}]}],
            },
        }
    )


def test_a_gateway_no_resource_defines_is_reported() -> None:
    assert analyze([virtual_service(["mesh", "ingres"])]) == [
        "[ISM0017] VirtualService shop/reviews: gateway 'ingres' (shop/ingres) is not defined: no Gateway resource "
        "has that namespace and name, so no gateway proxy serves the VirtualService's hosts for it"
    ]


def test_names_in_match_blocks_count_too() -> None:
    found = analyze([parse_resource(INGRESS), virtual_service(["shop/ingress"], ["other/edge"])])
    assert [message.split(":")[1].strip() for message in found] == ["gateway 'other/edge' (other/edge) is not defined"]


def test_defined_gateways_mesh_and_no_gateways_are_quiet() -> None:
    gateway = parse_resource(INGRESS)
    assert analyze([gateway, virtual_service(["mesh", "shop/ingress"])]) == []
    assert analyze([gateway, virtual_service(["ingress"], ["ingress", "mesh"])]) == []
    assert analyze([virtual_service([])]) == []


def test_a_gateway_no_gateway_proxy_serves_is_reported_with_the_catalog() -> None:
    gateway = parse_resource(INGRESS)
    selecting = parse_resource({**INGRESS, "spec": {**INGRESS["spec"], "selector": {"istio": "ingressgateway"}}})
    proxies = Catalog(gateway_labels=({"istio": "ingressgateway", "app": "ingressgateway"},))
    assert found([selecting], proxies) == []
    assert found([selecting], Catalog()) == [
        "[ISM0020] Gateway shop/ingress: spec.selector {'istio': 'ingressgateway'} meets no gateway proxy in the "
        "catalog: its servers are not served (run `isthmus proxy run --gateway` with those labels, see `--label`)"
    ]
    assert found([gateway], proxies) == []  # an empty selector: every gateway proxy
    assert analyze([selecting]) == []  # no catalog, no check


def found(resources: list[Any], catalog: Catalog) -> list[str]:
    return [str(message) for message in analyze_messages(resources, catalog=catalog)]


def test_tls_routes_get_the_subset_and_weight_checks() -> None:
    edge = parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "edge", "namespace": "shop"},
            "spec": {
                "hosts": ["*.example.com"],
                "gateways": ["ingress"],
                "tls": [
                    {
                        "match": [{"sniHosts": ["a.example.com"]}],
                        "route": [
                            {"destination": {"host": "reviews", "subset": "v9"}, "weight": 0},
                            {"destination": {"host": "reviews"}, "weight": 0},
                        ],
                    }
                ],
            },
        }
    )
    codes = sorted(message.split("]")[0] + "]" for message in analyze([parse_resource(INGRESS), edge]))
    assert codes == ["[ISM0001]", "[ISM0005]"]


def test_a_binding_whose_hosts_no_server_covers_is_reported() -> None:
    narrow = parse_resource(
        {**INGRESS, "spec": {"servers": [{**INGRESS["spec"]["servers"][0], "hosts": ["shop/*.example.com"]}]}}
    )
    found = analyze([narrow, virtual_service(["ingress"])])
    assert found == [
        "[ISM0021] VirtualService shop/reviews: no server of gateway shop/ingress covers its hosts ['reviews'] (or "
        "admits namespace shop): the binding serves nothing; add the hosts to a server"
    ]
    assert analyze([parse_resource(INGRESS), virtual_service(["ingress"])]) == []  # "*" covers every host
