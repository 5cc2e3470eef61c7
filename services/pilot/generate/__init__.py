"""Pure per-proxy generation: (snapshot, proxy) -> ProxyConfig, with no I/O; push.py calls it for every proxy.

Routes (routes.py), clusters (clusters.py) and inbound policy (inbound.py) each state their part of the
mesh contract. The outbound part (virtual hosts and clusters) is the same for every proxy of a snapshot
and is computed once per snapshot. The output is deterministic: the same snapshot gives byte-identical
ProxyConfig JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.pilot.generate.clusters import clusters
from services.pilot.generate.hosts import HostIndex
from services.pilot.generate.inbound import inbound
from services.pilot.generate.routes import ClusterRef, default_ref, virtual_host
from services.pilot.snapshot import Proxy, Snapshot
from shared.model import DestinationRule, VirtualService
from shared.model.proxy_config import Cluster, ProxyConfig, VirtualHost


@dataclass(frozen=True)
class Outbound:
    virtual_hosts: tuple[VirtualHost, ...]
    clusters: tuple[Cluster, ...]


def _outbound(snapshot: Snapshot, trust_domain: str) -> Outbound:
    hosts = HostIndex(snapshot)
    virtual_services = snapshot.of_kind(VirtualService)
    refs: set[ClusterRef] = {default_ref(service) for service in hosts.services}
    virtual_hosts = [virtual_host(service, virtual_services, hosts, refs) for service in hosts.services]
    generated = clusters(refs, snapshot, snapshot.of_kind(DestinationRule), hosts, trust_domain)
    return Outbound(virtual_hosts=tuple(virtual_hosts), clusters=tuple(generated))


def outbound(snapshot: Snapshot, trust_domain: str) -> Outbound:
    """Virtual hosts for every catalog service and the clusters their routes use."""
    return snapshot.memoized(("outbound", trust_domain), lambda: _outbound(snapshot, trust_domain))


def generate(snapshot: Snapshot, proxy: Proxy, trust_domain: str, root_namespace: str) -> ProxyConfig:
    """The proxy's config (unversioned; call .versioned() before publishing it)."""
    shared = outbound(snapshot, trust_domain)
    return ProxyConfig(
        proxy_id=proxy.proxy_id,
        service=proxy.service,
        namespace=proxy.namespace,
        virtual_hosts=list(shared.virtual_hosts),
        clusters=list(shared.clusters),
        inbound=inbound(snapshot, proxy, root_namespace),
    )


__all__ = ["Outbound", "generate", "outbound"]
