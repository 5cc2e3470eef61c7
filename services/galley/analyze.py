"""Cross-resource analysis after validation: coded messages about the whole config set (batch over stored config).

Messages never block an apply (resources may arrive in any order), they tell the user what will not work yet.
Each carries a stable code, the way Istio's analyzers carry IST0101 and friends:

- ISM0001 a route sends traffic to a subset no DestinationRule defines (requests there fail with 503).
- ISM0002 a VirtualService or DestinationRule host is not in the Consul catalog (only with a catalog).
- ISM0003 PeerAuthentications at the same scope (namespace or mesh, same selector) ask for different modes.
- ISM0004 an AuthorizationPolicy principal is held by no workload in the catalog (only with a catalog).
- ISM0005 a route's destinations all have weight 0, so it can send traffic nowhere.
- ISM0006 several DestinationRules for one host in one namespace (merged as Istio does: what each keeps; rules
  in different namespaces do not compete: a caller takes its own namespace's, else the service's namespace's,
  else the root namespace's, as pilot does).
- ISM0007 several VirtualServices for one host (their routes are joined in namespace/name order).

ISM0001 and ISM0002 cover `tcp` routes too, and ISM0008 a `tcp` route to a service not declared TCP
(analyze_tcp.py). ISM0009-ISM0011 and ISM0018-ISM0019 are about ServiceEntries and WorkloadEntries
(analyze_entries.py), whose hosts count as known hosts for ISM0002. ISM0012-ISM0013 are about VirtualService
delegation (analyze_routes.py), ISM0014-ISM0015 about Sidecars competing for the same workloads and ISM0022
about ingress listeners on ports their workloads do not front (analyze_sidecars.py), ISM0016 about locality
failover without outlier detection (analyze_locality.py), ISM0023 about a maxRetries a retryBudget overrides
(analyze_retries.py), ISM0017 about VirtualServices naming a gateway that no Gateway defines, ISM0020 about
Gateways no gateway proxy serves and ISM0021 about bindings whose hosts no server of the Gateway covers
(analyze_gateways.py). ISM0006, ISM0007 and ISM0009 count only resources some caller namespace sees together
(`exportTo`): others never compete.

Hosts compare the way pilot reads them: lower case, a short name qualified with the resource's namespace,
Kubernetes-style `.svc` / `.svc.cluster.local` suffixes ignored, `<name>.service.consul` meaning the catalog
service `name`. Weights follow Istio: a route with one destination sends it everything whatever its weight;
with several, an unset weight counts as 0 unless every weight is unset (then traffic splits evenly, as
pilot generates it).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import cast

from services.galley.analyze_base import (
    CONFLICTING_PEER_AUTHENTICATION,
    SEVERAL_DESTINATION_RULES,
    SEVERAL_VIRTUAL_SERVICES,
    UNKNOWN_HOST,
    UNKNOWN_PRINCIPAL,
    Catalog,
    Message,
    canonical_host,
    label,
    resource_key,
    seen_together,
)
from services.galley.analyze_entries import entry_hosts, entry_messages, is_entry_host
from services.galley.analyze_gateways import gateway_messages, unserved_gateways
from services.galley.analyze_locality import failover_messages
from services.galley.analyze_retries import max_retries_messages
from services.galley.analyze_routes import HTTP, delegate_messages, missing_subsets, zero_weights
from services.galley.analyze_sidecars import ingress_port_messages, sidecar_messages
from services.galley.analyze_tcp import tcp_messages
from shared.model import (
    AuthorizationPolicy,
    DestinationRule,
    Gateway,
    PeerAuthentication,
    Resource,
    ServiceEntry,
    Sidecar,
    VirtualService,
    WorkloadEntry,
)

__all__ = ["Catalog", "Message", "analyze", "analyze_messages", "canonical_host", "merged_view"]


def merged_view(batch: Sequence[Resource], stored: Iterable[Resource]) -> list[Resource]:
    """The config set as it will be after the batch is applied (batch resources replace stored ones)."""
    view = {resource_key(resource): resource for resource in stored}
    view.update({resource_key(resource): resource for resource in batch})
    return [view[key] for key in sorted(view)]


def analyze_messages(
    resources: Sequence[Resource],
    focus: Sequence[Resource] = (),
    catalog: Catalog | None = None,
    trust_domain: str = "cluster.local",
) -> list[Message]:
    """Findings for the config set; with `focus`, only those involving one of the focus resources."""
    rules = [r for r in resources if isinstance(r, DestinationRule)]
    services = [r for r in resources if isinstance(r, VirtualService)]
    messages = missing_subsets(services, rules, HTTP) + zero_weights(services, HTTP) + delegate_messages(services)
    messages += _conflicting_peer_authentications([r for r in resources if isinstance(r, PeerAuthentication)])
    messages += _duplicate_rules(rules) + _overlapping_services(services)
    entries = [r for r in resources if isinstance(r, ServiceEntry)]
    known = entry_hosts(entries)
    if catalog is not None:
        messages += _unknown_hosts(services, rules, catalog, known)
        policies = [r for r in resources if isinstance(r, AuthorizationPolicy)]
        messages += _unknown_principals(policies, catalog, trust_domain)
    messages += tcp_messages(services, rules, catalog, known)
    messages += entry_messages(entries, rules, catalog, [r for r in resources if isinstance(r, WorkloadEntry)])
    sidecars = [r for r in resources if isinstance(r, Sidecar)]
    messages += sidecar_messages(sidecars)
    gateways = [r for r in resources if isinstance(r, Gateway)]
    messages += failover_messages(rules) + max_retries_messages(rules) + gateway_messages(services, gateways)
    if catalog is not None:
        messages += unserved_gateways(gateways, catalog) + ingress_port_messages(sidecars, catalog)
    if not focus:
        return messages
    labels = {label(resource) for resource in focus}
    return [message for message in messages if labels & message.involved]


def analyze(resources: Sequence[Resource], focus: Sequence[Resource] = ()) -> list[str]:
    """Findings as text, `[CODE] <resource or host>: ...` (what galley returns with an apply)."""
    return [str(message) for message in analyze_messages(resources, focus)]


def _conflicting_peer_authentications(policies: list[PeerAuthentication]) -> list[Message]:
    by_scope: dict[tuple[str, tuple[tuple[str, str], ...]], list[PeerAuthentication]] = defaultdict(list)
    for policy in sorted(policies, key=lambda p: (p.metadata.namespace, p.metadata.name)):
        labels = policy.spec.selector.match_labels if policy.spec.selector else {}
        by_scope[(policy.metadata.namespace, tuple(sorted(labels.items())))].append(policy)
    messages: list[Message] = []
    for (namespace, selector), group in sorted(by_scope.items()):
        modes = {str(p.spec.mtls.mode) if p.spec.mtls else "UNSET" for p in group}
        if len(group) < 2 or len(modes) < 2:
            continue
        names = [label(p) for p in group]
        where = f"workloads with labels {dict(selector)}" if selector else "the whole namespace"
        text = (
            f"namespace {namespace!r}, {where}: PeerAuthentications {', '.join(names)} set different mTLS modes "
            f"({', '.join(sorted(modes))}) at the same scope; only the oldest applies, keep one"
        )
        messages.append(Message(CONFLICTING_PEER_AUTHENTICATION, text, frozenset(names)))
    return messages


def _duplicate_rules(rules: list[DestinationRule]) -> list[Message]:
    """Rules for one host meet only within one namespace: pilot's lookup path takes one namespace per caller
    (its own, the service's, the root) and, there, merges the rules the caller sees in name order."""
    by_host: dict[tuple[str, str], list[DestinationRule]] = defaultdict(list)
    for rule in sorted(rules, key=lambda r: (r.metadata.namespace, r.metadata.name)):
        by_host[(canonical_host(rule.spec.host, rule.metadata.namespace), rule.metadata.namespace)].append(rule)
    messages: list[Message] = []
    for (host, namespace), everyone in sorted(by_host.items()):
        group = seen_together(everyone)
        if len(group) > 1:
            names = [label(rule) for rule in group]
            outcome = _merge_outcome(cast(list[DestinationRule], group))
            text = (
                f"host {host!r} has {len(group)} DestinationRules in namespace {namespace!r} ({', '.join(names)}); "
                f"a caller that sees several merges them in name order: {outcome}"
            )
            messages.append(Message(SEVERAL_DESTINATION_RULES, text, frozenset(names)))
    return messages


def _merge_outcome(rules: list[DestinationRule]) -> str:
    """What merging `rules` (in order, as pilot does: DestinationRule.merged_with) keeps and ignores."""
    merged = functools.reduce(DestinationRule.merged_with, rules)
    policy = merged.spec.traffic_policy
    with_policy = [rule for rule in rules if rule.spec.traffic_policy is not None]
    if policy is None:
        parts = ["no top-level trafficPolicy"]
    else:
        owner = next(rule for rule in rules if rule.spec.traffic_policy is policy)
        ignored = [label(rule) for rule in with_policy if rule is not owner]
        parts = [f"the top-level trafficPolicy of {label(owner)}"]
        if ignored:
            parts[0] += f" (those of {', '.join(ignored)} are ignored)"
    kept = merged.spec.subsets
    owners = {id(subset): rule for rule in rules for subset in rule.spec.subsets}
    kept_ids = {id(subset) for subset in kept}
    dropped = [
        f"subset {subset.name!r} of {label(rule)} (defined by {label(owners[id(merged.spec.subset(subset.name))])})"
        for rule in rules
        for subset in rule.spec.subsets
        if id(subset) not in kept_ids
    ]
    parts.append(f"subsets {', '.join(sorted(subset.name for subset in kept)) or 'none'}")
    if dropped:
        parts.append(f"ignored: {', '.join(dropped)}")
    return "; ".join(parts)


def _overlapping_services(services: list[VirtualService]) -> list[Message]:
    by_host: dict[str, list[VirtualService]] = defaultdict(list)
    for service in services:
        for host in dict.fromkeys(canonical_host(h, service.metadata.namespace) for h in service.spec.hosts):
            by_host[host].append(service)
    messages: list[Message] = []
    for host, everyone in sorted(by_host.items()):
        group = seen_together(everyone)
        if len(group) > 1:
            ordered = sorted(group, key=lambda vs: (vs.metadata.namespace, vs.metadata.name))
            names = [label(service) for service in ordered]
            text = (
                f"host {host!r} is routed by {len(group)} VirtualServices ({', '.join(names)}); their routes are "
                f"joined in that order, so {names[0]} matches first"
            )
            messages.append(Message(SEVERAL_VIRTUAL_SERVICES, text, frozenset(names)))
    return messages


def _unknown_hosts(
    services: list[VirtualService], rules: list[DestinationRule], catalog: Catalog, entry_hosts: frozenset[str]
) -> list[Message]:
    messages: list[Message] = []

    def check(resource: Resource, path: str, host: str) -> None:
        canonical = canonical_host(host, resource.metadata.namespace)
        if host == "*" or catalog.has_host(canonical) or is_entry_host(canonical, entry_hosts):
            return
        text = f"{label(resource)}: {path}: host {host!r} is not a service in the Consul catalog"
        messages.append(Message(UNKNOWN_HOST, text, frozenset({label(resource)})))

    for service in services:
        for i, host in enumerate(service.spec.hosts):
            check(service, f"spec.hosts[{i}]", host)
        for i, http in enumerate(service.spec.http):
            for j, route in enumerate(http.route):
                check(service, f"spec.http[{i}].route[{j}].destination.host", route.destination.host)
    for rule in rules:
        check(rule, "spec.host", rule.spec.host)
    return messages


def principal_matches(pattern: str, value: str) -> bool:
    """Istio's string matching of principals: exact, `prefix*`, `*suffix` or `*`."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return pattern == value


def _unknown_principals(policies: list[AuthorizationPolicy], catalog: Catalog, trust_domain: str) -> list[Message]:
    held = [f"{trust_domain}/ns/{namespace}/sa/{account}" for namespace, account in sorted(catalog.identities)]
    messages: list[Message] = []
    for policy in policies:
        for i, rule in enumerate(policy.spec.rules):
            for j, rule_from in enumerate(rule.from_):
                for k, principal in enumerate(rule_from.source.principals):
                    if any(principal_matches(principal, identity) for identity in held):
                        continue
                    text = (
                        f"{label(policy)}: spec.rules[{i}].from[{j}].source.principals[{k}]: no workload in the "
                        f"catalog has identity {principal!r}"
                    )
                    messages.append(Message(UNKNOWN_PRINCIPAL, text, frozenset({label(policy)})))
    return messages
