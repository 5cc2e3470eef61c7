"""The route checks `isthmus analyze` runs on both kinds of VirtualService routes, `http` and `tcp`.

- ISM0001 a route sends traffic to a subset no DestinationRule defines. Subsets are matched on the service
  name only, deliberately leniently: no warning unless no rule could apply.
- ISM0005 a route's destinations all have weight 0.
- ISM0012 an http route delegates to a VirtualService that does not exist, or that has hosts and so is no
  delegate: pilot drops the route (Istio's mergeVirtualServicesIfNeeded), its requests go to the next route.
- ISM0013 a delegate VirtualService (no hosts) that no route delegates to: it routes nothing. A delegate's
  hosts-less spec raises no ISM0002 (it has no hosts to look up); its destinations are checked as any route's.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from services.galley.analyze_base import (
    ALL_WEIGHTS_ZERO,
    UNDEFINED_SUBSET,
    UNKNOWN_DELEGATE,
    UNUSED_DELEGATE,
    Message,
    label,
)
from shared.model import DestinationRule, VirtualService


@dataclass(frozen=True)
class RouteKind:
    field: str
    """The spec field holding the routes: "http", "tcp" or "tls"."""
    traffic: str
    failure: str
    """What happens to traffic routed to an undefined subset."""

    def blocks(self, service: VirtualService) -> list[Any]:
        return list(getattr(service.spec, self.field))


HTTP = RouteKind("http", "requests", "fail")
TCP = RouteKind("tcp", "connections", "are closed")
TLS = RouteKind("tls", "connections", "are closed")


def _short_name(host: str) -> str:
    return host.lower().split(".")[0]


def missing_subsets(services: list[VirtualService], rules: list[DestinationRule], kind: RouteKind) -> list[Message]:
    subsets: dict[str, set[str]] = defaultdict(set)
    for rule in rules:
        subsets[_short_name(rule.spec.host)].update(subset.name for subset in rule.spec.subsets)
    messages: list[Message] = []
    for service in services:
        for i, block in enumerate(kind.blocks(service)):
            for j, route in enumerate(block.route):
                destination = route.destination
                if destination.subset is None or destination.subset in subsets[_short_name(destination.host)]:
                    continue
                text = (
                    f"{label(service)}: spec.{kind.field}[{i}].route[{j}].destination.subset: subset "
                    f"{destination.subset!r} of host {destination.host!r} is not defined by any DestinationRule; "
                    f"{kind.traffic} routed there {kind.failure} until one defines it"
                )
                messages.append(Message(UNDEFINED_SUBSET, text, frozenset({label(service)})))
    return messages


def zero_weights(services: list[VirtualService], kind: RouteKind) -> list[Message]:
    messages: list[Message] = []
    for service in services:
        for i, block in enumerate(kind.blocks(service)):
            weights = [route.weight for route in block.route]
            if len(weights) > 1 and any(w is not None for w in weights) and not any(weights):
                text = (
                    f"{label(service)}: spec.{kind.field}[{i}].route: every destination has weight 0, so "
                    f"{kind.traffic} matching this route reach no destination; give at least one a positive weight"
                )
                messages.append(Message(ALL_WEIGHTS_ZERO, text, frozenset({label(service)})))
    return messages


def delegate_messages(services: list[VirtualService]) -> list[Message]:
    """ISM0012 for delegating routes whose delegate pilot cannot find, ISM0013 for delegates nobody names."""
    by_key = {(vs.metadata.namespace, vs.metadata.name): vs for vs in services}
    named: set[tuple[str, str]] = set()
    messages: list[Message] = []
    for service in services:
        for i, http in enumerate(service.spec.http):
            if http.delegate is None:
                continue
            key = (http.delegate.namespace or service.metadata.namespace, http.delegate.name)
            named.add(key)
            target = by_key.get(key)
            if target is not None and target.spec.is_delegate:
                continue
            why = (
                "does not exist"
                if target is None
                else "has hosts, so it is not a delegate (a delegate VirtualService has no hosts)"
            )
            text = (
                f"{label(service)}: spec.http[{i}].delegate: VirtualService {key[0]}/{key[1]} {why}; pilot drops "
                "this route, so the requests it matches go to the next route"
            )
            involved = {label(service)} | ({label(target)} if target is not None else set())
            messages.append(Message(UNKNOWN_DELEGATE, text, frozenset(involved)))
    for service in services:
        if service.spec.is_delegate and (service.metadata.namespace, service.metadata.name) not in named:
            text = (
                f"{label(service)}: spec.hosts: without hosts this is a delegate VirtualService, and no route "
                f"delegates to it (delegate: {{name: {service.metadata.name}, namespace: "
                f"{service.metadata.namespace}}}), so it routes nothing"
            )
            messages.append(Message(UNUSED_DELEGATE, text, frozenset({label(service)})))
    return messages
