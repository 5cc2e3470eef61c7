"""The ServiceEntry checks of `isthmus analyze`, and the hosts ServiceEntries make known to the other checks.

- ISM0009 a host declared by several ServiceEntries: only the first in (namespace, name) order is used.
- ISM0010 a ServiceEntry host that is a catalog service's domain: the catalog service keeps it (only with a
  catalog).
- ISM0011 a DestinationRule asks for ISTIO_MUTUAL towards a MESH_EXTERNAL ServiceEntry host: nothing outside
  the mesh holds a mesh identity, so pilot gives that host's clusters no endpoints (requests fail with 503)
  rather than fall back to plain text.
- ISM0018 a ServiceEntry whose `workloadSelector` chooses no WorkloadEntry of its namespace: its hosts have no
  endpoints (requests fail with 503 UH) until one is applied.
- ISM0019 a WorkloadEntry no ServiceEntry chooses (it receives no traffic), or whose `ports` name a port none
  of the ServiceEntries choosing it declares (that mapping is not used).

A VirtualService or DestinationRule host that a ServiceEntry declares is not unknown (ISM0002), and neither
is a wildcard VirtualService host (`*.example.com`) covering one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from services.galley.analyze_base import (
    CATALOG_HOLDS_ENTRY_HOST,
    EXTERNAL_ISTIO_MUTUAL,
    NO_WORKLOAD_ENTRY_SELECTED,
    SEVERAL_SERVICE_ENTRIES,
    UNUSED_WORKLOAD_ENTRY,
    Catalog,
    Message,
    canonical_host,
    label,
    seen_together,
)
from shared.model import DestinationRule, ServiceEntry, WorkloadEntry
from shared.model.destination_rule import ClientTLSSettings, TLSMode, TrafficPolicy
from shared.model.service_entry import Location


def entry_hosts(entries: list[ServiceEntry]) -> frozenset[str]:
    return frozenset(host for entry in entries for host in entry.spec.hosts)


def is_entry_host(host: str, hosts: frozenset[str]) -> bool:
    """Whether a resource host (canonical) names a ServiceEntry host, or, as `*.suffix`, covers one."""
    if host.startswith("*"):
        return any(known.endswith(host[1:]) for known in hosts)
    return host in hosts


def entry_messages(
    entries: list[ServiceEntry],
    rules: list[DestinationRule],
    catalog: Catalog | None,
    workloads: list[WorkloadEntry] | None = None,
) -> list[Message]:
    ordered = sorted(entries, key=lambda entry: (entry.metadata.namespace, entry.metadata.name))
    messages = _several_entries(ordered) + _external_istio_mutual(ordered, rules)
    messages += _nothing_selected(ordered, workloads or []) + _workload_messages(ordered, workloads or [])
    if catalog is not None:
        messages += _catalog_hosts(ordered, catalog)
    return messages


def _nothing_selected(entries: list[ServiceEntry], workloads: list[WorkloadEntry]) -> list[Message]:
    messages: list[Message] = []
    for entry in entries:
        selector = entry.spec.workload_selector
        if selector is None or any(entry.chooses(workload) for workload in workloads):
            continue
        chosen = ", ".join(f"{key}={value}" for key, value in sorted(selector.labels.items()))
        text = (
            f"{label(entry)}: spec.workloadSelector ({chosen}) chooses no WorkloadEntry in namespace "
            f"{entry.metadata.namespace!r}: hosts {', '.join(entry.spec.hosts)} have no endpoints (503 UH) until "
            "one is applied"
        )
        messages.append(Message(NO_WORKLOAD_ENTRY_SELECTED, text, frozenset({label(entry)})))
    return messages


def _workload_messages(entries: list[ServiceEntry], workloads: list[WorkloadEntry]) -> list[Message]:
    """ISM0019 for each WorkloadEntry no ServiceEntry chooses, or whose `ports` name a port none of those that
    choose it declares."""
    messages: list[Message] = []
    for workload in sorted(workloads, key=lambda w: (w.metadata.namespace, w.metadata.name)):
        choosing = [entry for entry in entries if entry.chooses(workload)]
        if not choosing:
            text = (
                f"{label(workload)}: no ServiceEntry's workloadSelector in namespace {workload.metadata.namespace!r} "
                "chooses it, so it receives no traffic"
            )
            messages.append(Message(UNUSED_WORKLOAD_ENTRY, text, frozenset({label(workload)})))
            continue
        declared = {port.name for entry in choosing for port in entry.spec.ports}
        for name in sorted(set(workload.spec.ports) - declared):
            text = (
                f"{label(workload)}: spec.ports.{name}: no ServiceEntry that chooses it ("
                f"{', '.join(label(entry) for entry in choosing)}) declares a port named {name!r}; the mapping is "
                "not used"
            )
            involved = frozenset({label(workload), *(label(entry) for entry in choosing)})
            messages.append(Message(UNUSED_WORKLOAD_ENTRY, text, involved))
    return messages


def _several_entries(entries: list[ServiceEntry]) -> list[Message]:
    by_host: dict[str, list[ServiceEntry]] = defaultdict(list)
    for entry in entries:
        for host in entry.spec.hosts:
            by_host[host].append(entry)
    messages: list[Message] = []
    for host, everyone in sorted(by_host.items()):
        group = seen_together(everyone)
        if len(group) > 1:
            names = [label(entry) for entry in group]
            text = (
                f"host {host!r} is declared by {len(group)} ServiceEntries ({', '.join(names)}); "
                f"only {names[0]} is used"
            )
            messages.append(Message(SEVERAL_SERVICE_ENTRIES, text, frozenset(names)))
    return messages


def _catalog_hosts(entries: list[ServiceEntry], catalog: Catalog) -> list[Message]:
    messages: list[Message] = []
    for entry in entries:
        for i, host in enumerate(entry.spec.hosts):
            service = catalog.service_of(canonical_host(host, entry.metadata.namespace))
            if service is None:
                continue
            text = (
                f"{label(entry)}: spec.hosts[{i}]: {host!r} is a name of catalog service {service!r}, which keeps "
                "it: this host of the ServiceEntry is not used"
            )
            messages.append(Message(CATALOG_HOLDS_ENTRY_HOST, text, frozenset({label(entry)})))
    return messages


def _tls_settings(policy: TrafficPolicy | None, path: str) -> Iterator[tuple[str, ClientTLSSettings]]:
    if policy is None:
        return
    if policy.tls is not None:
        yield f"{path}.tls", policy.tls
    for i, level in enumerate(policy.port_level_settings):
        if level.tls is not None:
            yield f"{path}.portLevelSettings[{i}].tls", level.tls


def _external_istio_mutual(entries: list[ServiceEntry], rules: list[DestinationRule]) -> list[Message]:
    owner: dict[str, ServiceEntry] = {}
    for entry in entries:
        for host in entry.spec.hosts:
            owner.setdefault(host, entry)  # the first ServiceEntry of a host is the one used
    external = {host: entry for host, entry in owner.items() if entry.spec.location == Location.MESH_EXTERNAL}
    messages: list[Message] = []
    for rule in rules:
        declared = external.get(canonical_host(rule.spec.host, rule.metadata.namespace))
        if declared is None:
            continue
        found = list(_tls_settings(rule.spec.traffic_policy, "spec.trafficPolicy"))
        for i, subset in enumerate(rule.spec.subsets):
            found += _tls_settings(subset.traffic_policy, f"spec.subsets[{i}].trafficPolicy")
        for path, tls in found:
            if tls.mode != TLSMode.ISTIO_MUTUAL:
                continue
            text = (
                f"{label(rule)}: {path}.mode: ISTIO_MUTUAL towards {rule.spec.host!r}, which {label(declared)} "
                "declares MESH_EXTERNAL: nothing outside the mesh holds a mesh identity, so its clusters get no "
                "endpoints; use MESH_INTERNAL for a meshed workload, or another tls mode"
            )
            messages.append(Message(EXTERNAL_ISTIO_MUTUAL, text, frozenset({label(rule), label(declared)})))
    return messages
