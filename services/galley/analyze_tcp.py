"""The `tcp` route checks of `isthmus analyze`: VirtualService TCP routes against DestinationRules and the catalog.

- ISM0001 a `tcp` route sends connections to a subset no DestinationRule defines (they are closed, UH).
- ISM0002 a `tcp` route's destination host is not in the Consul catalog (only with a catalog).
- ISM0005 a `tcp` route's destinations all have weight 0.
ISM0001 and ISM0005 cover `tls` routes (gateways' and sidecars') the same way.
- ISM0008 a `tcp` route names a service (as destination or as a host of its VirtualService) that the
  catalog does not declare TCP (Meta `isthmus-protocol=tcp`): pilot builds TCP listeners only for TCP
  services, so the route is never used, or its connections would reach an HTTP port as raw bytes.

The subset and weight checks are analyze_routes.py's, shared with `http` routes.
"""

from __future__ import annotations

from services.galley.analyze_base import (
    TCP_ROUTE_TO_HTTP_SERVICE,
    UNKNOWN_HOST,
    Catalog,
    Message,
    canonical_host,
    label,
)
from services.galley.analyze_routes import TCP, TLS, missing_subsets, zero_weights
from shared.model import DestinationRule, VirtualService


def tcp_messages(
    services: list[VirtualService],
    rules: list[DestinationRule],
    catalog: Catalog | None,
    entry_hosts: frozenset[str] = frozenset(),
) -> list[Message]:
    """Every finding about the `tcp` routes of `services` (the catalog checks only with a catalog); a destination
    that is one of `entry_hosts` (ServiceEntry hosts) is known."""
    with_tcp = [service for service in services if service.spec.tcp]
    messages = missing_subsets(with_tcp, rules, TCP) + zero_weights(with_tcp, TCP)
    with_tls = [service for service in services if service.spec.tls]
    messages += missing_subsets(with_tls, rules, TLS) + zero_weights(with_tls, TLS)
    if catalog is not None:
        messages += _catalog_checks(with_tcp, catalog, entry_hosts)
    return messages


def _not_tcp(service: VirtualService, path: str, host: str, catalog: Catalog) -> Message | None:
    name = catalog.service_of(canonical_host(host, service.metadata.namespace))
    if name is None or name in catalog.tcp_services:
        return None
    text = (
        f"{label(service)}: {path}: service {name!r} is not declared TCP (Consul Meta isthmus-protocol=tcp; "
        "`isthmus proxy run --protocol tcp` or `--extra-port N:tcp`), so this tcp route is never used"
    )
    return Message(TCP_ROUTE_TO_HTTP_SERVICE, text, frozenset({label(service)}))


def _catalog_checks(services: list[VirtualService], catalog: Catalog, entry_hosts: frozenset[str]) -> list[Message]:
    found: list[Message | None] = []
    for service in services:
        found += [_not_tcp(service, f"spec.hosts[{i}]", host, catalog) for i, host in enumerate(service.spec.hosts)]
        for i, tcp in enumerate(service.spec.tcp):
            for j, route in enumerate(tcp.route):
                path = f"spec.tcp[{i}].route[{j}].destination.host"
                host = route.destination.host
                canonical = canonical_host(host, service.metadata.namespace)
                if canonical in entry_hosts and not catalog.has_host(canonical):
                    continue
                if catalog.has_host(canonical):
                    found.append(_not_tcp(service, path, host, catalog))
                else:
                    text = f"{label(service)}: {path}: host {host!r} is not a service in the Consul catalog"
                    found.append(Message(UNKNOWN_HOST, text, frozenset({label(service)})))
    return [message for message in found if message is not None]
