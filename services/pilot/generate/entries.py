"""Endpoints of a ServiceEntry host's clusters: what clusters.py puts in a cluster whose host no catalog service holds.

The endpoints of the cluster of port P (a port the ServiceEntry declares; any other port has none, logged): each of
`spec.endpoints`, or of the WorkloadEntries its `workloadSelector` chooses in its namespace (none chosen: no
endpoints), at its `ports[<name of P>]`, else P's targetPort, else P; with resolution DNS or DNS_ROUND_ROBIN and
neither endpoints nor selector, the cluster's host itself. An address may be a host name: the sidecar resolves it
when it connects (so DNS and DNS_ROUND_ROBIN behave alike here: one endpoint per name, whose addresses the resolver
hands out). Labels are the endpoint's own plus `locality` (the label the sidecar's locality-aware balancing reads,
as for catalog endpoints); every endpoint counts as healthy (outlier detection still ejects failing ones). Endpoints
are called in plain text (TLS origination, when a DestinationRule asks for it, is the sidecar's), except under
ISTIO_MUTUAL: a MESH_INTERNAL endpoint then carries the SPIFFE identity of its serviceAccount (default "default") in
the ServiceEntry's namespace, and a MESH_EXTERNAL host gets no endpoints at all (logged), since nothing outside the
mesh holds a mesh identity and plain text would be a silent downgrade.
"""

from __future__ import annotations

import logging

from services.pilot.snapshot import Snapshot
from shared.consul import META_LOCALITY
from shared.identity import SpiffeId
from shared.model import ServiceEntry
from shared.model import WorkloadEntry as WorkloadEntryResource
from shared.model.destination_rule import TLSMode
from shared.model.proxy_config import Endpoint
from shared.model.service_entry import HTTP2_PORT_PROTOCOLS, Location, Resolution, WorkloadEntry, is_ip

log = logging.getLogger(__name__)

DEFAULT_SERVICE_ACCOUNT = "default"


def _labels(workload: WorkloadEntry) -> dict[str, str]:
    if workload.locality is None or META_LOCALITY in workload.labels:
        return dict(sorted(workload.labels.items()))
    return dict(sorted({**workload.labels, META_LOCALITY: workload.locality}.items()))


def selected_workloads(entry: ServiceEntry, snapshot: Snapshot) -> tuple[WorkloadEntryResource, ...]:
    """The WorkloadEntries a ServiceEntry's `workloadSelector` chooses: those of its namespace whose labels
    include the selector's, in name order (none without a selector)."""
    if entry.spec.workload_selector is None:
        return ()
    return tuple(
        workload
        for workload in snapshot.in_namespaces(WorkloadEntryResource, entry.metadata.namespace)
        if entry.chooses(workload)
    )


def entry_endpoints(
    entry: ServiceEntry,
    host: str,
    port: int,
    tls_mode: TLSMode | None,
    trust_domain: str,
    selected: tuple[WorkloadEntryResource, ...] = (),
) -> list[Endpoint]:
    """The endpoints of `host`'s cluster of `port` (see the module notes), sorted; `selected`: the
    WorkloadEntries its `workloadSelector` chooses (selected_workloads)."""
    where = f"ServiceEntry {entry.metadata.namespace}/{entry.metadata.name}"
    served = entry.spec.port(port)
    if served is None:
        log.warning("%s declares no port %d for %s: its cluster has no endpoints", where, port, host)
        return []
    mutual = tls_mode == TLSMode.ISTIO_MUTUAL
    if mutual and entry.spec.location != Location.MESH_INTERNAL:
        log.warning(
            "%s: host %s is MESH_EXTERNAL, which holds no mesh identity for ISTIO_MUTUAL: its cluster of port %d "
            "has no endpoints",
            where,
            host,
            port,
        )
        return []
    if entry.spec.workload_selector is not None:
        workloads: list[WorkloadEntry] = []
        for chosen in selected:
            if entry.spec.resolution == Resolution.STATIC and not is_ip(chosen.spec.address):
                log.warning(
                    "%s is STATIC: WorkloadEntry %s/%s has address %r, not an IP address, and is left out",
                    where,
                    chosen.metadata.namespace,
                    chosen.metadata.name,
                    chosen.spec.address,
                )
                continue
            workloads.append(chosen.spec)
    else:
        workloads = entry.spec.endpoints or [WorkloadEntry(address=host)]
    endpoints = []
    for workload in workloads:
        identity = None
        if mutual:
            account = workload.service_account or DEFAULT_SERVICE_ACCOUNT
            identity = SpiffeId(trust_domain, entry.metadata.namespace, account).uri
        endpoints.append(
            Endpoint(
                address=workload.address,
                port=workload.ports.get(served.name, served.target_port or served.number),
                labels=_labels(workload),
                identity=identity,
                healthy=True,
                weight=workload.weight or 1,
                http2=served.protocol in HTTP2_PORT_PROTOCOLS,
            )
        )
    return sorted(endpoints, key=lambda e: (e.address, e.port, e.identity or ""))
