"""ISM0017: a VirtualService whose `gateways` (or a match block's) name a Gateway that no Gateway resource defines
(Istio's "referenced gateway not found"): no proxy follows that binding.
ISM0020 (with the catalog): a Gateway whose `selector` no gateway proxy's labels meet: its servers are not
served anywhere.
ISM0021: a VirtualService bound to a Gateway none of whose servers covers any of its hosts (Istio's
"VirtualService host not found in gateway"): the binding serves nothing."""

from __future__ import annotations

from services.galley.analyze_base import (
    GATEWAY_WITHOUT_PROXY,
    HOST_NOT_IN_GATEWAY,
    UNKNOWN_GATEWAY,
    Catalog,
    Message,
    label,
)
from shared.model import Gateway, VirtualService
from shared.model.gateway import ANY_NAMESPACE, OWN_NAMESPACE, covered

MESH_GATEWAY = "mesh"


def _full(name: str, namespace: str) -> str:
    return name if "/" in name else f"{namespace}/{name}"


def _serves(gateway: Gateway, service: VirtualService) -> bool:
    """Whether a server of the Gateway covers a host of the VirtualService and admits its namespace."""
    for server in gateway.spec.servers:
        for entry in server.hosts:
            namespace, _, dns_name = entry.partition("/")
            wanted = gateway.metadata.namespace if namespace == OWN_NAMESPACE else namespace
            if namespace != ANY_NAMESPACE and wanted != service.metadata.namespace:
                continue
            if any(covered(host, dns_name) is not None for host in service.spec.hosts):
                return True
    return False


def gateway_messages(services: list[VirtualService], gateways: list[Gateway]) -> list[Message]:
    by_name = {f"{gateway.metadata.namespace}/{gateway.metadata.name}": gateway for gateway in gateways}
    defined = set(by_name)
    messages: list[Message] = []
    for service in services:
        namespace = service.metadata.namespace
        for name in sorted({_full(bound, namespace) for bound in service.spec.gateways} & defined):
            if not _serves(by_name[name], service):
                text = (
                    f"{label(service)}: no server of gateway {name} covers its hosts {service.spec.hosts} (or admits "
                    f"namespace {namespace}): the binding serves nothing; add the hosts to a server"
                )
                messages.append(Message(HOST_NOT_IN_GATEWAY, text, frozenset({label(service), label(by_name[name])})))
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
