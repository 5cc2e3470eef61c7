"""What every `isthmus analyze` check shares: message codes and type, the catalog, host names as pilot reads them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared.model import Resource
from shared.model.export_to import seen_together as export_together

UNDEFINED_SUBSET = "ISM0001"
UNKNOWN_HOST = "ISM0002"
CONFLICTING_PEER_AUTHENTICATION = "ISM0003"
UNKNOWN_PRINCIPAL = "ISM0004"
ALL_WEIGHTS_ZERO = "ISM0005"
SEVERAL_DESTINATION_RULES = "ISM0006"
SEVERAL_VIRTUAL_SERVICES = "ISM0007"
TCP_ROUTE_TO_HTTP_SERVICE = "ISM0008"
SEVERAL_SERVICE_ENTRIES = "ISM0009"
CATALOG_HOLDS_ENTRY_HOST = "ISM0010"
EXTERNAL_ISTIO_MUTUAL = "ISM0011"
UNKNOWN_DELEGATE = "ISM0012"
UNUSED_DELEGATE = "ISM0013"
SEVERAL_NAMESPACE_SIDECARS = "ISM0014"
SEVERAL_SELECTING_SIDECARS = "ISM0015"
FAILOVER_WITHOUT_OUTLIER_DETECTION = "ISM0016"
UNKNOWN_GATEWAY = "ISM0017"
GATEWAY_WITHOUT_PROXY = "ISM0020"
HOST_NOT_IN_GATEWAY = "ISM0021"
NO_WORKLOAD_ENTRY_SELECTED = "ISM0018"
UNUSED_WORKLOAD_ENTRY = "ISM0019"
INGRESS_PORT_NOT_FRONTED = "ISM0022"
MAX_RETRIES_UNDER_BUDGET = "ISM0023"

_IGNORED_SUFFIXES = (".svc.cluster.local", ".svc")
_CONSUL_SUFFIX = ".service.consul"


@dataclass(frozen=True)
class Workload:
    """A meshed workload as the catalog shows it (one instance)."""

    namespace: str
    labels: Mapping[str, str]
    app_ports: frozenset[int]


@dataclass(frozen=True)
class Message:
    """One finding: a stable code, the resources it involves and the text (which names the field path)."""

    code: str
    text: str
    involved: frozenset[str]

    def __str__(self) -> str:
        return f"[{self.code}] {self.text}"


@dataclass(frozen=True)
class Catalog:
    """What the Consul catalog holds, for the checks that need it: service name -> namespace, workload identities."""

    services: Mapping[str, str] = field(default_factory=dict)
    identities: frozenset[tuple[str, str]] = frozenset()
    """(namespace, service account) of every meshed workload."""
    tcp_services: frozenset[str] = frozenset()
    """Services whose Meta `isthmus-protocol` is tcp."""
    gateway_labels: tuple[Mapping[str, str], ...] = ()
    """The labels of every gateway proxy (Meta `isthmus-gateway`)."""
    workloads: tuple[Workload, ...] = ()
    """Every meshed workload that is not a gateway: its namespace, labels and the app ports its sidecar fronts."""

    def service_of(self, host: str) -> str | None:
        """The catalog service a canonical host names, or None when the catalog has no such service."""
        if host.endswith(_CONSUL_SUFFIX):
            name = host[: -len(_CONSUL_SUFFIX)]
            return name if name in self.services else None
        name, _, namespace = host.partition(".")
        return name if self.services.get(name) == namespace else None

    def has_host(self, host: str) -> bool:
        return self.service_of(host) is not None


def canonical_host(host: str, namespace: str) -> str:
    host = host.lower()
    for suffix in _IGNORED_SUFFIXES:
        if host.endswith(suffix):
            host = host[: -len(suffix)]
            break
    return host if "." in host else f"{host}.{namespace.lower()}"


def seen_together(group: Sequence[Resource]) -> list[Resource]:
    """The members of a group some caller namespace sees together with another member (`exportTo`): only they
    compete for one caller; the group keeps its order."""

    def export(resource: Resource) -> tuple[Sequence[str], str]:
        return getattr(resource.spec, "export_to", ()), resource.metadata.namespace

    return [
        resource
        for index, resource in enumerate(group)
        if any(
            other_index != index and export_together(export(resource), export(other))
            for other_index, other in enumerate(group)
        )
    ]


def label(resource: Resource) -> str:
    return f"{resource.kind} {resource.metadata.namespace}/{resource.metadata.name}"


def resource_key(resource: Resource) -> tuple[str, str, str]:
    return resource.kind, resource.metadata.namespace, resource.metadata.name
