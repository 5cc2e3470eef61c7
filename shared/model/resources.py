"""The Istio-shaped resources (apiVersion, kind, metadata, spec) and the kind registry used to parse them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from shared.model.authorization_policy import AuthorizationPolicySpec
from shared.model.base import Metadata, Spec
from shared.model.destination_rule import DestinationRuleSpec
from shared.model.gateway import GatewaySpec
from shared.model.peer_authentication import PeerAuthenticationSpec
from shared.model.request_authentication import RequestAuthenticationSpec
from shared.model.service_entry import ServiceEntrySpec
from shared.model.service_entry import WorkloadEntry as WorkloadEntrySpec
from shared.model.sidecar import SidecarSpec
from shared.model.virtual_service import VirtualServiceSpec

NetworkingVersion = Literal["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"]
SecurityVersion = Literal["security.istio.io/v1", "security.istio.io/v1beta1"]


class VirtualService(Spec):
    api_version: NetworkingVersion
    kind: Literal["VirtualService"]
    metadata: Metadata
    spec: VirtualServiceSpec


class DestinationRule(Spec):
    api_version: NetworkingVersion
    kind: Literal["DestinationRule"]
    metadata: Metadata
    spec: DestinationRuleSpec

    def merged_with(self, later: DestinationRule) -> DestinationRule:
        """This rule and a later one for the same host in the same namespace, as Istio merges them
        (pilot/pkg/model/destination_rule.go): the later rule's subsets are added unless this one has one of the
        same name; its top-level trafficPolicy and exportTo are taken only where this one has none. The merge
        keeps this rule's name."""
        names = {subset.name for subset in self.spec.subsets}
        spec = self.spec.model_copy(
            update={
                "subsets": [*self.spec.subsets, *(s for s in later.spec.subsets if s.name not in names)],
                "traffic_policy": self.spec.traffic_policy or later.spec.traffic_policy,
                "export_to": self.spec.export_to or later.spec.export_to,
            }
        )
        return self.model_copy(update={"spec": spec})


class ServiceEntry(Spec):
    api_version: NetworkingVersion
    kind: Literal["ServiceEntry"]
    metadata: Metadata
    spec: ServiceEntrySpec

    def chooses(self, workload: WorkloadEntry) -> bool:
        """Whether its workloadSelector chooses the workload: one of its own namespace whose labels include the
        selector's."""
        selector = self.spec.workload_selector
        return (
            selector is not None
            and workload.metadata.namespace == self.metadata.namespace
            and selector.labels.items() <= workload.spec.labels.items()
        )


class WorkloadEntry(Spec):
    """A workload outside the catalog (a VM without a Consul registration, say) that ServiceEntries with a
    matching `workloadSelector` use as an endpoint."""

    api_version: NetworkingVersion
    kind: Literal["WorkloadEntry"]
    metadata: Metadata
    spec: WorkloadEntrySpec


class Gateway(Spec):
    api_version: NetworkingVersion
    kind: Literal["Gateway"]
    metadata: Metadata
    spec: GatewaySpec


class Sidecar(Spec):
    api_version: NetworkingVersion
    kind: Literal["Sidecar"]
    metadata: Metadata
    spec: SidecarSpec


class PeerAuthentication(Spec):
    api_version: SecurityVersion
    kind: Literal["PeerAuthentication"]
    metadata: Metadata
    spec: PeerAuthenticationSpec


class AuthorizationPolicy(Spec):
    api_version: SecurityVersion
    kind: Literal["AuthorizationPolicy"]
    metadata: Metadata
    spec: AuthorizationPolicySpec


class RequestAuthentication(Spec):
    api_version: SecurityVersion
    kind: Literal["RequestAuthentication"]
    metadata: Metadata
    spec: RequestAuthenticationSpec


Resource = (
    VirtualService
    | DestinationRule
    | ServiceEntry
    | WorkloadEntry
    | Gateway
    | Sidecar
    | PeerAuthentication
    | AuthorizationPolicy
    | RequestAuthentication
)

KINDS: dict[str, type[Resource]] = {
    "VirtualService": VirtualService,
    "DestinationRule": DestinationRule,
    "ServiceEntry": ServiceEntry,
    "WorkloadEntry": WorkloadEntry,
    "Gateway": Gateway,
    "Sidecar": Sidecar,
    "PeerAuthentication": PeerAuthentication,
    "AuthorizationPolicy": AuthorizationPolicy,
    "RequestAuthentication": RequestAuthentication,
}


class UnknownKind(ValueError):
    """The document's kind is not one Isthmus understands; the message lists the known kinds."""


def kind_class(kind: object) -> type[Resource]:
    if not isinstance(kind, str) or kind not in KINDS:
        raise UnknownKind(f"kind {kind!r} is not supported; supported kinds: {', '.join(sorted(KINDS))}")
    return KINDS[kind]


def parse_resource(document: Any) -> Resource:
    """Validate one decoded document; raises UnknownKind or pydantic.ValidationError with field paths."""
    if not isinstance(document, dict):
        raise UnknownKind(
            f"a resource must be a mapping with apiVersion, kind, metadata and spec, got {type(document).__name__}"
        )
    return kind_class(document.get("kind")).model_validate(document)


def dump_resource(resource: BaseModel) -> dict[str, Any]:
    """The resource as Istio-shaped JSON data (camelCase, unset optional fields left out)."""
    return resource.model_dump(mode="json", by_alias=True, exclude_none=True)
