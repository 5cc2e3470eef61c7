"""Host names in generation: the domains of each catalog service and how a resource's host resolves to one.

A catalog service `name` in namespace `ns` (the Meta `namespace` most of its instances declare, default
"default") answers to
`name`, `name.ns`, `name.ns.svc`, `name.ns.svc.cluster.local` and `name.service.consul`, all lower case and
without port. A host written in a VirtualService or DestinationRule without a dot is a short name, read in
that resource's namespace (`reviews` in namespace `shop` means `reviews.shop`).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.pilot.snapshot import Snapshot
from shared.consul import DEFAULT_NAMESPACE

CONSUL_OWN_SERVICE = "consul"


def service_domains(name: str, namespace: str) -> list[str]:
    name, namespace = name.lower(), namespace.lower()
    return [
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.cluster.local",
        f"{name}.service.consul",
    ]


def qualify(host: str, namespace: str) -> str:
    """A resource's host as a comparable domain: lower case, short names qualified with the namespace."""
    host = host.lower()
    return host if "." in host else f"{host}.{namespace.lower()}"


@dataclass(frozen=True)
class MeshService:
    name: str
    namespace: str

    @property
    def domains(self) -> list[str]:
        return service_domains(self.name, self.namespace)


def _namespace_of(namespaces: list[str]) -> str:
    """A service's namespace: the one most of its instances declare (ties: the first by name)."""
    if not namespaces:
        return DEFAULT_NAMESPACE
    return min(set(namespaces), key=lambda ns: (-namespaces.count(ns), ns))


class HostIndex:
    """Catalog services and the domain -> service map used to resolve resource hosts."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.services: list[MeshService] = []
        self._by_domain: dict[str, MeshService] = {}
        for name, instances in snapshot.services.items():
            if name == CONSUL_OWN_SERVICE:
                continue
            service = MeshService(name=name, namespace=_namespace_of([i.namespace for i in instances]))
            self.services.append(service)
            for domain in service.domains:
                self._by_domain.setdefault(domain, service)

    def by_name(self, name: str) -> MeshService | None:
        return self._by_domain.get(name.lower())

    def resolve(self, host: str, namespace: str) -> MeshService | None:
        """The catalog service a resource host (written in `namespace`) names, or None."""
        return self._by_domain.get(qualify(host, namespace))

    def cluster_host(self, host: str, namespace: str) -> str:
        """The host used in cluster names: the catalog service name, or the qualified host if unknown."""
        service = self.resolve(host, namespace)
        return service.name if service else qualify(host, namespace)
