"""Sidecar (networking.istio.io/v1), egress part: which hosts a workload's sidecar gets config for.

The Isthmus subset of Istio's Sidecar: `workloadSelector` (the workloads of the Sidecar's namespace it applies
to; left out, the whole namespace, or in the root namespace every namespace without a Sidecar of its own),
one `egress` listener without port whose `hosts` are `namespace/dnsName` entries, and
`outboundTrafficPolicy.mode: REGISTRY_ONLY` (what Isthmus does anyway). Host entries follow Istio's validation
(`validateNamespaceSlashWildcardHostname`): the namespace is `*` (any), `.` (the Sidecar's own), `~` (none) or
a namespace name; the dnsName is `*`, `*.suffix` or a fully qualified host (no short names).

Refused, with the field's path: `egress[].port`, `egress[].bind` and `egress[].captureMode` (Isthmus has no
per-port listeners and no traffic capture), more than one egress listener (Istio needs a port on all but one),
`ingress`, `inboundConnectionPool`, `outboundTrafficPolicy.mode: ALLOW_ANY` and `egressProxy` (the sidecar
only calls registry hosts). Pilot applies it in services/pilot/generate/sidecar_scope.py.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator

from shared.model.base import LabelSelector, Spec

ANY_NAMESPACE = "*"
OWN_NAMESPACE = "."
NO_NAMESPACE = "~"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_dns_name(name: str, whole: str) -> None:
    """Raises ValueError (naming the entry `whole`) unless `name` is a lower-case DNS name."""
    if len(name) > 253 or not all(len(label) <= 63 and _DNS_LABEL.match(label) for label in name.split(".")):
        raise ValueError(
            f"{whole!r}: {name!r} is not a DNS name (lower-case labels of letters, digits and '-', separated by dots)"
        )


def is_namespace_name(namespace: str) -> bool:
    return len(namespace) <= 63 and _DNS_LABEL.match(namespace) is not None


def check_egress_host(value: str) -> str:
    """An egress host `namespace/dnsName`, dnsName lower-cased (Istio compares host names without case)."""
    namespace, slash, dns_name = value.partition("/")
    if not slash:
        raise ValueError(f"{value!r}: host must be of form namespace/dnsName, like ./* or shop/reviews.shop")
    if not namespace or not dns_name:
        raise ValueError(f"{value!r}: the namespace and the dnsName of a host entry cannot be empty")
    if namespace not in (ANY_NAMESPACE, OWN_NAMESPACE, NO_NAMESPACE) and not is_namespace_name(namespace):
        raise ValueError(
            f"{value!r}: invalid namespace {namespace!r}: use '*' (any), '.' (the Sidecar's own), '~' (none) "
            "or a namespace name (a lower-case DNS label)"
        )
    dns_name = dns_name.lower()
    if dns_name == "*":
        return f"{namespace}/{dns_name}"
    if "." not in dns_name:
        raise ValueError(
            f"{value!r}: short names (non FQDN) are not allowed: write {dns_name}.<namespace> or another of the "
            "service's fully qualified domains"
        )
    if dns_name.startswith("*."):
        check_dns_name(dns_name[2:], value)
    elif "*" in dns_name:
        raise ValueError(f"{value!r}: a wildcard is only '*' or a leading '*.' (like */*.example.com)")
    else:
        check_dns_name(dns_name, value)
    return f"{namespace}/{dns_name}"


EgressHost = Annotated[str, AfterValidator(check_egress_host)]


class IstioEgressListener(Spec):
    hosts: Annotated[list[EgressHost], Field(min_length=1)]
    port: Any = None
    bind: Any = None
    capture_mode: Any = None

    @field_validator("port")
    @classmethod
    def _port(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                "port is not supported: the sidecar has no per-port outbound listeners; one egress listener "
                "without port covers every port of its hosts"
            )
        return value

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("bind is not supported: the sidecar's outbound listener address is set by its flags")
        return value

    @field_validator("capture_mode")
    @classmethod
    def _capture_mode(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("captureMode is not supported: Isthmus does not capture traffic; apps call the sidecar")
        return value


class OutboundTrafficPolicyMode(StrEnum):
    REGISTRY_ONLY = "REGISTRY_ONLY"
    ALLOW_ANY = "ALLOW_ANY"


class OutboundTrafficPolicy(Spec):
    mode: OutboundTrafficPolicyMode = OutboundTrafficPolicyMode.REGISTRY_ONLY
    egress_proxy: Any = None

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: OutboundTrafficPolicyMode) -> OutboundTrafficPolicyMode:
        if value == OutboundTrafficPolicyMode.ALLOW_ANY:
            raise ValueError(
                "ALLOW_ANY is not supported: Isthmus calls only registry hosts (catalog services and ServiceEntry "
                "hosts), and a Host no service or ServiceEntry names gets 404 NR; declare external hosts with a "
                "ServiceEntry and use REGISTRY_ONLY"
            )
        return value

    @field_validator("egress_proxy")
    @classmethod
    def _egress_proxy(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("egressProxy is not supported: it only serves ALLOW_ANY, which Isthmus does not do")
        return value


class SidecarSpec(Spec):
    workload_selector: LabelSelector | None = None
    egress: list[IstioEgressListener] = Field(default_factory=list)
    outbound_traffic_policy: OutboundTrafficPolicy | None = None
    ingress: Any = None
    inbound_connection_pool: Any = None

    @field_validator("egress")
    @classmethod
    def _one_listener(cls, value: list[IstioEgressListener]) -> list[IstioEgressListener]:
        if len(value) > 1:
            raise ValueError(
                f"{len(value)} egress listeners: Istio needs a port on all but one, and ports are not supported; "
                "list every host in one listener"
            )
        return value

    @field_validator("ingress")
    @classmethod
    def _ingress(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                "ingress is not supported: the sidecar's inbound side is set by its flags and Consul registration"
            )
        return value

    @field_validator("inbound_connection_pool")
    @classmethod
    def _inbound_connection_pool(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("inboundConnectionPool is not supported: the sidecar's inbound side has no pool settings")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> SidecarSpec:
        if not self.egress and self.outbound_traffic_policy is None:
            raise ValueError("empty configuration: give an egress listener (or outboundTrafficPolicy)")
        return self

    @property
    def egress_hosts(self) -> tuple[str, ...] | None:
        """The hosts of the egress listener; None without one (then the Sidecar limits nothing)."""
        return tuple(self.egress[0].hosts) if self.egress else None
