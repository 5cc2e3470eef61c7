"""The typed config model: Istio-shaped resources (validated, frozen) and the pilot-to-proxy config."""

from shared.model.resources import (
    KINDS,
    AuthorizationPolicy,
    DestinationRule,
    Gateway,
    PeerAuthentication,
    Resource,
    ServiceEntry,
    Sidecar,
    UnknownKind,
    VirtualService,
    WorkloadEntry,
    dump_resource,
    kind_class,
    parse_resource,
)

__all__ = [
    "KINDS",
    "AuthorizationPolicy",
    "DestinationRule",
    "Gateway",
    "PeerAuthentication",
    "Resource",
    "ServiceEntry",
    "Sidecar",
    "UnknownKind",
    "VirtualService",
    "WorkloadEntry",
    "dump_resource",
    "kind_class",
    "parse_resource",
]
