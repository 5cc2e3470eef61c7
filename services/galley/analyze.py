"""Cross-resource analysis after validation: warnings about the whole config set (batch over stored config).

Warnings never block an apply (resources may arrive in any order), they tell the user what will not work yet.
Hosts compare the way pilot reads them: lower case, a short name qualified with the resource's namespace,
Kubernetes-style `.svc` / `.svc.cluster.local` suffixes ignored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from shared.model import DestinationRule, Resource, VirtualService

_IGNORED_SUFFIXES = (".svc.cluster.local", ".svc")


def canonical_host(host: str, namespace: str) -> str:
    host = host.lower()
    for suffix in _IGNORED_SUFFIXES:
        if host.endswith(suffix):
            host = host[: -len(suffix)]
            break
    return host if "." in host else f"{host}.{namespace.lower()}"


def _label(resource: Resource) -> str:
    return f"{resource.kind} {resource.metadata.namespace}/{resource.metadata.name}"


def _identity(resource: Resource) -> tuple[str, str, str]:
    return resource.kind, resource.metadata.namespace, resource.metadata.name


def merged_view(batch: Sequence[Resource], stored: Iterable[Resource]) -> list[Resource]:
    """The config set as it will be after the batch is applied (batch resources replace stored ones)."""
    view = {_identity(resource): resource for resource in stored}
    view.update({_identity(resource): resource for resource in batch})
    return [view[key] for key in sorted(view)]


def analyze(resources: Sequence[Resource], focus: Sequence[Resource] = ()) -> list[str]:
    """Warnings for the config set; with `focus`, only those that involve one of the focus resources."""
    rules = [r for r in resources if isinstance(r, DestinationRule)]
    services = [r for r in resources if isinstance(r, VirtualService)]
    warnings = _missing_subsets(services, rules) + _duplicate_rules(rules) + _overlapping_services(services)
    if not focus:
        return [text for text, _ in warnings]
    labels = {_label(resource) for resource in focus}
    return [text for text, involved in warnings if labels & involved]


def _missing_subsets(services: list[VirtualService], rules: list[DestinationRule]) -> list[tuple[str, set[str]]]:
    # Matching on the service name only is deliberately lenient: no warning unless no rule could apply.
    subsets_by_name: dict[str, set[str]] = defaultdict(set)
    for rule in rules:
        subsets_by_name[rule.spec.host.lower().split(".")[0]].update(s.name for s in rule.spec.subsets)
    warnings: list[tuple[str, set[str]]] = []
    for service in services:
        for i, http in enumerate(service.spec.http):
            for j, route in enumerate(http.route):
                destination = route.destination
                if destination.subset is None:
                    continue
                if destination.subset in subsets_by_name[destination.host.lower().split(".")[0]]:
                    continue
                warnings.append(
                    (
                        f"{_label(service)}: spec.http[{i}].route[{j}].destination.subset: subset "
                        f"{destination.subset!r} of host {destination.host!r} is not defined by any "
                        "DestinationRule; requests routed there fail until one defines it",
                        {_label(service)},
                    )
                )
    return warnings


def _duplicate_rules(rules: list[DestinationRule]) -> list[tuple[str, set[str]]]:
    by_host: dict[str, list[DestinationRule]] = defaultdict(list)
    for rule in sorted(rules, key=lambda r: (r.metadata.namespace, r.metadata.name)):
        by_host[canonical_host(rule.spec.host, rule.metadata.namespace)].append(rule)
    warnings: list[tuple[str, set[str]]] = []
    for host, group in sorted(by_host.items()):
        if len(group) > 1:
            names = [_label(rule) for rule in group]
            text = f"host {host!r} has {len(group)} DestinationRules ({', '.join(names)}); only {names[0]} is used"
            warnings.append((text, set(names)))
    return warnings


def _overlapping_services(services: list[VirtualService]) -> list[tuple[str, set[str]]]:
    by_host: dict[str, list[VirtualService]] = defaultdict(list)
    for service in services:
        for host in dict.fromkeys(canonical_host(h, service.metadata.namespace) for h in service.spec.hosts):
            by_host[host].append(service)
    warnings: list[tuple[str, set[str]]] = []
    for host, group in sorted(by_host.items()):
        if len(group) > 1:
            ordered = sorted(group, key=lambda vs: (vs.metadata.namespace, vs.metadata.name))
            names = [_label(service) for service in ordered]
            text = (
                f"host {host!r} is routed by {len(group)} VirtualServices ({', '.join(names)}); their routes are "
                f"joined in that order, so {names[0]} matches first"
            )
            warnings.append((text, set(names)))
    return warnings
