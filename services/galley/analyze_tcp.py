"""The `tcp` route checks of `isthmus analyze`: VirtualService TCP routes against DestinationRules and the catalog.

- ISM0001 a `tcp` route sends connections to a subset no DestinationRule defines (they are closed, UH).
- ISM0002 a `tcp` route's destination host is not in the Consul catalog (only with a catalog).
- ISM0005 a `tcp` route's destinations all have weight 0.
- ISM0008 a `tcp` route names a service (as destination or as a host of its VirtualService) that the
  catalog does not declare TCP (Meta `isthmus-protocol=tcp`): pilot builds TCP listeners only for TCP
  services, so the route is never used, or its connections would reach an HTTP port as raw bytes.

Subsets are matched on the service name only, leniently, as for HTTP routes (analyze.py).
"""

from __future__ import annotations

from collections import defaultdict

from services.galley.analyze_base import (
    ALL_WEIGHTS_ZERO,
    TCP_ROUTE_TO_HTTP_SERVICE,
    UNDEFINED_SUBSET,
    UNKNOWN_HOST,
    Catalog,
    Message,
    canonical_host,
    label,
)
from shared.model import DestinationRule, VirtualService


def tcp_messages(
    services: list[VirtualService], rules: list[DestinationRule], catalog: Catalog | None
) -> list[Message]:
    """Every finding about the `tcp` routes of `services` (the catalog checks only with a catalog)."""
    with_tcp = [service for service in services if service.spec.tcp]
    messages = _missing_subsets(with_tcp, rules) + _zero_weights(with_tcp)
    if catalog is not None:
        messages += _catalog_checks(with_tcp, catalog)
    return messages


def _short_name(host: str) -> str:
    return host.lower().split(".")[0]


def _missing_subsets(services: list[VirtualService], rules: list[DestinationRule]) -> list[Message]:
    subsets: dict[str, set[str]] = defaultdict(set)
    for rule in rules:
        subsets[_short_name(rule.spec.host)].update(subset.name for subset in rule.spec.subsets)
    messages: list[Message] = []
    for service in services:
        for i, tcp in enumerate(service.spec.tcp):
            for j, route in enumerate(tcp.route):
                destination = route.destination
                if destination.subset is None or destination.subset in subsets[_short_name(destination.host)]:
                    continue
                text = (
                    f"{label(service)}: spec.tcp[{i}].route[{j}].destination.subset: subset "
                    f"{destination.subset!r} of host {destination.host!r} is not defined by any DestinationRule; "
                    "connections routed there are closed until one defines it"
                )
                messages.append(Message(UNDEFINED_SUBSET, text, frozenset({label(service)})))
    return messages


def _zero_weights(services: list[VirtualService]) -> list[Message]:
    messages: list[Message] = []
    for service in services:
        for i, tcp in enumerate(service.spec.tcp):
            weights = [route.weight for route in tcp.route]
            if len(weights) > 1 and any(w is not None for w in weights) and not any(weights):
                text = (
                    f"{label(service)}: spec.tcp[{i}].route: every destination has weight 0, so connections "
                    "matching this route reach no destination; give at least one a positive weight"
                )
                messages.append(Message(ALL_WEIGHTS_ZERO, text, frozenset({label(service)})))
    return messages


def _not_tcp(service: VirtualService, path: str, host: str, catalog: Catalog) -> Message | None:
    name = catalog.service_of(canonical_host(host, service.metadata.namespace))
    if name is None or name in catalog.tcp_services:
        return None
    text = (
        f"{label(service)}: {path}: service {name!r} is not declared TCP (Consul Meta isthmus-protocol=tcp; "
        "`isthmus proxy run --protocol tcp`), so this tcp route is never used"
    )
    return Message(TCP_ROUTE_TO_HTTP_SERVICE, text, frozenset({label(service)}))


def _catalog_checks(services: list[VirtualService], catalog: Catalog) -> list[Message]:
    found: list[Message | None] = []
    for service in services:
        found += [_not_tcp(service, f"spec.hosts[{i}]", host, catalog) for i, host in enumerate(service.spec.hosts)]
        for i, tcp in enumerate(service.spec.tcp):
            for j, route in enumerate(tcp.route):
                path = f"spec.tcp[{i}].route[{j}].destination.host"
                host = route.destination.host
                if catalog.has_host(canonical_host(host, service.metadata.namespace)):
                    found.append(_not_tcp(service, path, host, catalog))
                else:
                    text = f"{label(service)}: {path}: host {host!r} is not a service in the Consul catalog"
                    found.append(Message(UNKNOWN_HOST, text, frozenset({label(service)})))
    return [message for message in found if message is not None]
