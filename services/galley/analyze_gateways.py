"""ISM0017: a VirtualService whose `gateways` name no `mesh`: it is bound to gateways, which Isthmus does not run,
so no sidecar follows it (pilot leaves it out of every sidecar's config)."""

from __future__ import annotations

from services.galley.analyze_base import GATEWAYS_ONLY, Message, label
from shared.model import VirtualService

MESH_GATEWAY = "mesh"


def gateway_messages(services: list[VirtualService]) -> list[Message]:
    messages: list[Message] = []
    for service in services:
        gateways = service.spec.gateways
        if gateways and MESH_GATEWAY not in gateways:
            text = (
                f"{label(service)}: spec.gateways: {gateways} names no 'mesh': it binds the VirtualService to "
                "gateways only, and Isthmus runs no gateways, so no sidecar follows it (add 'mesh' to the list)"
            )
            messages.append(Message(GATEWAYS_ONLY, text, frozenset({label(service)})))
    return messages
