"""ISM0017: a VirtualService whose `gateways` (or a match block's) name a Gateway that no Gateway resource defines
(Istio's "referenced gateway not found"): no proxy follows that binding.
ISM0020 (with the catalog): a Gateway whose `selector` no gateway proxy's labels meet: its servers are not
served anywhere."""

from __future__ import annotations

from services.galley.analyze_base import GATEWAY_WITHOUT_PROXY, UNKNOWN_GATEWAY, Catalog, Message, label
from shared.model import Gateway, VirtualService

MESH_GATEWAY = "mesh"


def _full(name: str, namespace: str) -> str:
    return name if "/" in name else f"{namespace}/{name}"


def gateway_messages(services: list[VirtualService], gateways: list[Gateway]) -> list[Message]:
    defined = {f"{gateway.metadata.namespace}/{gateway.metadata.name}" for gateway in gateways}
    messages: list[Message] = []
    for service in services:
        namespace = service.metadata.namespace
        named = [
            *service.spec.gateways,
            *(name for http in service.spec.http for m in http.match for name in m.gateways),
        ]
        missing = sorted(
            {name for name in named if name != MESH_GATEWAY and _full(name, namespace) not in defined},
        )
        for name in missing:
            text = (
                f"{label(service)}: gateway {name!r} ({_full(name, namespace)}) is not defined: no Gateway resource "
                "has that namespace and name, so no gateway proxy serves the VirtualService's hosts for it"
            )
            messages.append(Message(UNKNOWN_GATEWAY, text, frozenset({label(service)})))
    return messages


def unserved_gateways(gateways: list[Gateway], catalog: Catalog) -> list[Message]:
    messages: list[Message] = []
    for gateway in gateways:
        selector = gateway.spec.selector
        if any(gateway.spec.matches(dict(labels)) for labels in catalog.gateway_labels):
            continue
        text = (
            f"{label(gateway)}: spec.selector {selector or '{}'} meets no gateway proxy in the catalog: its servers "
            "are not served (run `isthmus proxy run --gateway` with those labels, see `--label`)"
        )
        messages.append(Message(GATEWAY_WITHOUT_PROXY, text, frozenset({label(gateway)})))
    return messages
