"""Generation of a proxy's inbound policy: resolved mTLS modes, JWT rules and the AuthorizationPolicies that select it.

mTLS mode (PeerAuthentication): mesh-wide = a policy in the root namespace without selector; namespace-wide
= a policy in the proxy's namespace without selector; workload = a policy in the proxy's namespace whose
selector matchLabels match the proxy's labels. The most specific level whose mode is not UNSET wins (UNSET,
or no mtls block, inherits from the level above); with nothing set the mode is PERMISSIVE, Istio's default.
Within one level the first policy in name order counts (Istio picks the oldest; names are deterministic).

Port level: as in Istio, `portLevelMtls` counts only in a workload-level policy (one with a selector). Its
keys are workload ports, i.e. the app port the sidecar fronts; each entry is resolved here (UNSET inherits the
workload's resolved mode) and the proxy picks the entry of its own app port.

JWT (RequestAuthentication): the rules of every policy in the root namespace or the proxy's namespace whose
selector matches (or that has none), sorted by (namespace, name).

Authorization: AuthorizationPolicies from the root namespace and the proxy's namespace whose selector
matches the proxy's labels (or that have none), sorted by (namespace, name).

Calls to the app (the Sidecar kind's inbound part): the Sidecar that applies to the proxy (sidecar_scope.py's
`applying_sidecar`, the same one that limits its egress) gives its ingress listeners, by workload port, with
their defaultEndpoint and connectionPool (the Sidecar's `inboundConnectionPool` when a listener has none),
and the `inboundConnectionPool` for the ports it does not list.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.pilot.generate.sidecar_scope import applying_sidecar
from services.pilot.snapshot import Proxy, Snapshot
from shared.model import AuthorizationPolicy, PeerAuthentication, Sidecar
from shared.model.base import WorkloadSelector
from shared.model.destination_rule import ConnectionPoolSettings
from shared.model.peer_authentication import MtlsMode
from shared.model.proxy_config import AppPort, InboundConfig, NamedAuthorizationPolicy, NamedJwtRule
from shared.model.resources import RequestAuthentication


def _selects(selector: WorkloadSelector | None, labels: Mapping[str, str]) -> bool:
    return selector is None or selector.matches(dict(labels))


def _mode(policy: PeerAuthentication | None) -> MtlsMode:
    if policy is None or policy.spec.mtls is None:
        return MtlsMode.UNSET
    return policy.spec.mtls.mode


def _first(policies: list[PeerAuthentication]) -> PeerAuthentication | None:
    return min(policies, key=lambda pa: pa.metadata.name, default=None)


def _levels(
    policies: list[PeerAuthentication], namespace: str, labels: Mapping[str, str], root_namespace: str
) -> tuple[PeerAuthentication | None, PeerAuthentication | None, PeerAuthentication | None]:
    """(workload, namespace, mesh) policy that applies at each level, if any."""
    mesh = _first([p for p in policies if p.metadata.namespace == root_namespace and p.spec.selector is None])
    in_namespace = [p for p in policies if p.metadata.namespace == namespace]
    namespace_wide = _first([p for p in in_namespace if p.spec.selector is None])
    workload = _first([p for p in in_namespace if p.spec.selector is not None and _selects(p.spec.selector, labels)])
    return workload, namespace_wide, mesh


def _resolve(levels: tuple[PeerAuthentication | None, ...]) -> MtlsMode:
    for level in levels:
        mode = _mode(level)
        if mode != MtlsMode.UNSET:
            return mode
    return MtlsMode.PERMISSIVE


def mtls_mode(policies: list[PeerAuthentication], proxy: Proxy, root_namespace: str) -> MtlsMode:
    return _resolve(_levels(policies, proxy.namespace, proxy.labels, root_namespace))


def workload_mtls_modes(
    policies: list[PeerAuthentication], namespace: str, labels: Mapping[str, str], root_namespace: str
) -> tuple[MtlsMode, dict[int, MtlsMode]]:
    """(mode, resolved port-level modes) of any workload; callers (e.g. cluster generation) may use it too."""
    levels = _levels(policies, namespace, labels, root_namespace)
    mode = _resolve(levels)
    workload = levels[0]
    ports: dict[int, MtlsMode] = {}
    if workload is not None:
        for port, setting in sorted(workload.spec.port_level_mtls.items()):
            ports[port] = mode if setting.mode == MtlsMode.UNSET else setting.mode
    return mode, ports


def endpoint_mtls_mode(
    policies: list[PeerAuthentication], namespace: str, labels: Mapping[str, str], port: int, root_namespace: str
) -> MtlsMode:
    """The mode a workload enforces on its app port `port`: what a caller must speak (DISABLE = plain text)."""
    mode, ports = workload_mtls_modes(policies, namespace, labels, root_namespace)
    return ports.get(port, mode)


def authorization(
    policies: list[AuthorizationPolicy], proxy: Proxy, root_namespace: str
) -> list[NamedAuthorizationPolicy]:
    chosen = [
        p
        for p in policies
        if p.metadata.namespace in (root_namespace, proxy.namespace) and _selects(p.spec.selector, proxy.labels)
    ]
    chosen.sort(key=lambda p: (p.metadata.namespace, p.metadata.name))
    return [NamedAuthorizationPolicy(name=p.metadata.name, namespace=p.metadata.namespace, spec=p.spec) for p in chosen]


def jwt_rules(policies: list[RequestAuthentication], proxy: Proxy, root_namespace: str) -> list[NamedJwtRule]:
    chosen = [
        p
        for p in policies
        if p.metadata.namespace in (root_namespace, proxy.namespace) and _selects(p.spec.selector, proxy.labels)
    ]
    chosen.sort(key=lambda p: (p.metadata.namespace, p.metadata.name))
    return [
        NamedJwtRule(name=f"{p.metadata.namespace}/{p.metadata.name}", rule=rule)
        for p in chosen
        for rule in p.spec.jwt_rules
    ]


def app_ports(sidecar: Sidecar | None) -> tuple[list[AppPort], ConnectionPoolSettings | None]:
    """The applying Sidecar's ingress listeners (in port order) and its inboundConnectionPool; a listener without
    a connectionPool of its own takes the Sidecar's."""
    if sidecar is None:
        return [], None
    default = sidecar.spec.inbound_connection_pool
    listeners = sorted(sidecar.spec.ingress, key=lambda listener: listener.port.number)
    return [
        AppPort(
            port=listener.port.number,
            default_endpoint=listener.default_endpoint,
            connection_pool=listener.connection_pool if listener.connection_pool is not None else default,
        )
        for listener in listeners
    ], default


def inbound(snapshot: Snapshot, proxy: Proxy, root_namespace: str) -> InboundConfig:
    namespaces = (root_namespace, proxy.namespace)
    mode, ports = workload_mtls_modes(
        snapshot.in_namespaces(PeerAuthentication, *namespaces), proxy.namespace, proxy.labels, root_namespace
    )
    listeners, pool = app_ports(applying_sidecar(snapshot, proxy, root_namespace))
    return InboundConfig(
        mtls_mode=mode,
        port_level_mtls=ports,
        authorization=authorization(snapshot.in_namespaces(AuthorizationPolicy, *namespaces), proxy, root_namespace),
        jwt_rules=jwt_rules(snapshot.in_namespaces(RequestAuthentication, *namespaces), proxy, root_namespace),
        app_ports=listeners,
        connection_pool=pool,
    )
