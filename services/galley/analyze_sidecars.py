"""The Sidecar checks of `isthmus analyze`: Sidecars competing for the same workloads, of which pilot uses one.

- ISM0014 several Sidecars without workloadSelector in one namespace: pilot applies only the first in name order
  to the namespace's workloads (Istio takes the oldest).
- ISM0015 several Sidecars in one namespace whose workloadSelector has the same labels: pilot applies only the
  first in name order to the workloads they select.

A Sidecar with a selector in the root namespace is not reported differently: as with PeerAuthentication, galley
does not know which namespace is the root one; pilot applies such a Sidecar only to the root namespace's own
workloads (services/pilot/generate/sidecar_scope.py).
"""

from __future__ import annotations

from collections import defaultdict

from services.galley.analyze_base import SEVERAL_NAMESPACE_SIDECARS, SEVERAL_SELECTING_SIDECARS, Message, label
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
