"""The Sidecar checks of `isthmus analyze`: Sidecars competing for the same workloads, of which pilot uses one.

- ISM0014 several Sidecars without workloadSelector in one namespace: pilot applies only the first in name order
  to the namespace's workloads (Istio takes the oldest).
- ISM0015 several Sidecars in one namespace whose workloadSelector has the same labels: pilot applies only the
  first in name order to the workloads they select.
- ISM0022 (only with a catalog) a Sidecar's ingress listener names a port that none of the workloads it applies to
  fronts (their `--app-port` and `--extra-port` app ports): its defaultEndpoint and connectionPool change nothing.
  Sidecars in the root namespace without selector (they apply mesh-wide) are not checked.

A Sidecar with a selector in the root namespace is not reported differently: as with PeerAuthentication, galley
does not know which namespace is the root one; pilot applies such a Sidecar only to the root namespace's own
workloads (services/pilot/generate/sidecar_scope.py).
"""

from __future__ import annotations

from collections import defaultdict

from services.galley.analyze_base import (
    INGRESS_PORT_NOT_FRONTED,
    SEVERAL_NAMESPACE_SIDECARS,
    SEVERAL_SELECTING_SIDECARS,
    Catalog,
    Message,
    label,
)
from shared.model import Sidecar


def sidecar_messages(sidecars: list[Sidecar]) -> list[Message]:
    by_scope: dict[tuple[str, tuple[tuple[str, str], ...]], list[Sidecar]] = defaultdict(list)
    for sidecar in sorted(sidecars, key=lambda s: (s.metadata.namespace, s.metadata.name)):
        selector = sidecar.spec.workload_selector
        labels = tuple(sorted(selector.labels.items())) if selector is not None else ()
        by_scope[(sidecar.metadata.namespace, labels)].append(sidecar)
    messages: list[Message] = []
    for (namespace, labels), group in sorted(by_scope.items()):
        if len(group) < 2:
            continue
        names = [label(sidecar) for sidecar in group]
        if labels:
            code = SEVERAL_SELECTING_SIDECARS
            where = f"workloads with labels {dict(labels)}"
        else:
            code = SEVERAL_NAMESPACE_SIDECARS
            where = "the whole namespace (no workloadSelector)"
        text = (
            f"namespace {namespace!r}, {where}: {len(group)} Sidecars ({', '.join(names)}) apply; "
            f"only {names[0]} is used, keep one"
        )
        messages.append(Message(code, text, frozenset(names)))
    return messages


def ingress_port_messages(sidecars: list[Sidecar], catalog: Catalog) -> list[Message]:
    messages: list[Message] = []
    for sidecar in sorted(sidecars, key=lambda s: (s.metadata.namespace, s.metadata.name)):
        if not sidecar.spec.ingress:
            continue
        selector = sidecar.spec.workload_selector
        applies_to = [
            workload
            for workload in catalog.workloads
            if workload.namespace == sidecar.metadata.namespace
            and (selector is None or all(workload.labels.get(k) == v for k, v in selector.labels.items()))
        ]
        if not applies_to:
            continue
        fronted = frozenset().union(*(workload.app_ports for workload in applies_to))
        for index, listener in enumerate(sidecar.spec.ingress):
            if listener.port.number in fronted:
                continue
            text = (
                f"{label(sidecar)}: spec.ingress[{index}].port.number: no workload it applies to fronts port "
                f"{listener.port.number} (their app ports: {', '.join(str(p) for p in sorted(fronted))}); "
                "the listener changes nothing"
            )
            messages.append(Message(INGRESS_PORT_NOT_FRONTED, text, frozenset({label(sidecar)})))
    return messages
