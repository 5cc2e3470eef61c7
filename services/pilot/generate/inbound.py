"""Generation of a proxy's inbound policy: the resolved mTLS mode and the AuthorizationPolicies that select it.

mTLS mode (PeerAuthentication): mesh-wide = a policy in the root namespace without selector; namespace-wide
= a policy in the proxy's namespace without selector; workload = a policy in the proxy's namespace whose
selector matchLabels match the proxy's labels. The most specific level whose mode is not UNSET wins (UNSET,
or no mtls block, inherits from the level above); with nothing set the mode is PERMISSIVE, Istio's default.
Within one level the first policy in name order counts.

Authorization: AuthorizationPolicies from the root namespace and the proxy's namespace whose selector
matches the proxy's labels (or that have none), sorted by (namespace, name).
"""

from __future__ import annotations

from services.pilot.snapshot import Proxy, Snapshot
from shared.model import AuthorizationPolicy, PeerAuthentication
from shared.model.base import WorkloadSelector
from shared.model.peer_authentication import MtlsMode
from shared.model.proxy_config import InboundConfig, NamedAuthorizationPolicy


def _selects(selector: WorkloadSelector | None, proxy: Proxy) -> bool:
    return selector is None or selector.matches(dict(proxy.labels))


def _mode(policy: PeerAuthentication | None) -> MtlsMode:
    if policy is None or policy.spec.mtls is None:
        return MtlsMode.UNSET
    return policy.spec.mtls.mode


def _first(policies: list[PeerAuthentication]) -> PeerAuthentication | None:
    return min(policies, key=lambda pa: pa.metadata.name, default=None)


def mtls_mode(policies: list[PeerAuthentication], proxy: Proxy, root_namespace: str) -> MtlsMode:
    mesh = _first([p for p in policies if p.metadata.namespace == root_namespace and p.spec.selector is None])
    in_namespace = [p for p in policies if p.metadata.namespace == proxy.namespace]
    namespace = _first([p for p in in_namespace if p.spec.selector is None])
    workload = _first([p for p in in_namespace if p.spec.selector is not None and _selects(p.spec.selector, proxy)])
    for level in (workload, namespace, mesh):
        mode = _mode(level)
        if mode != MtlsMode.UNSET:
            return mode
    return MtlsMode.PERMISSIVE


def authorization(
    policies: list[AuthorizationPolicy], proxy: Proxy, root_namespace: str
) -> list[NamedAuthorizationPolicy]:
    chosen = [
        p
        for p in policies
        if p.metadata.namespace in (root_namespace, proxy.namespace) and _selects(p.spec.selector, proxy)
    ]
    chosen.sort(key=lambda p: (p.metadata.namespace, p.metadata.name))
    return [NamedAuthorizationPolicy(name=p.metadata.name, namespace=p.metadata.namespace, spec=p.spec) for p in chosen]


def inbound(snapshot: Snapshot, proxy: Proxy, root_namespace: str) -> InboundConfig:
    return InboundConfig(
        mtls_mode=mtls_mode(snapshot.of_kind(PeerAuthentication), proxy, root_namespace),
        authorization=authorization(snapshot.of_kind(AuthorizationPolicy), proxy, root_namespace),
    )
