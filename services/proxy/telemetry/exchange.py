"""Peer metadata exchange for telemetry labels: what this proxy sends, and how far a peer's claim is believed.

Trust rule (Istio's): over mTLS a peer's metadata counts only when its namespace and service account are
those of the SPIFFE ID the certificate proved; otherwise it is ignored and the labels fall back to what
the certificate says. Over plain text the metadata is a hint and is taken as sent. A principal always
comes from the certificate (or the endpoint identity the client verified), never from the header.
Decoded values are cached per (value, identity), so a request costs one dict lookup.
"""

from __future__ import annotations

from services.proxy.telemetry.labels import UNKNOWN, Workload, WorkloadLabels, peer_labels
from shared.identity.spiffe import InvalidSpiffeId, parse_spiffe_id
from shared.peer_metadata import PeerMetadata, decode, headers_for

MAX_CACHED = 1024
Key = tuple[str | None, str | None]


def own_metadata(workload: Workload) -> PeerMetadata:
    try:
        account = parse_spiffe_id(workload.principal).service_account
    except InvalidSpiffeId:
        account = workload.app
    return PeerMetadata(workload.namespace, workload.labels[0], account, workload.app, workload.version)


def own_headers(workload: Workload, proxy_id: str) -> tuple[tuple[str, str], ...]:
    """The metadata headers this proxy adds to requests it sends and responses it relays."""
    return headers_for(own_metadata(workload), proxy_id)


def claimed_labels(value: str | None, spiffe_id: str | None) -> WorkloadLabels | None:
    """The peer's labels from its metadata, or None when there is none or it is not believed."""
    if not value:
        return None
    try:
        metadata = decode(value)
    except ValueError:
        return None
    if spiffe_id:
        try:
            proven = parse_spiffe_id(spiffe_id)
        except InvalidSpiffeId:
            return None
        if (proven.namespace, proven.service_account) != (metadata.namespace, metadata.service_account):
            return None
    principal = spiffe_id or UNKNOWN
    return (metadata.workload, metadata.namespace, principal, metadata.app, metadata.version)


class PeerBook:
    """Bounded caches of the labels peers resolve to, on each side of a request."""

    def __init__(self) -> None:
        self._callers: dict[Key, WorkloadLabels] = {}
        self._callees: dict[Key, WorkloadLabels | None] = {}

    def caller(self, value: str | None, spiffe_id: str | None) -> WorkloadLabels:
        """source_* labels of a request received: believed metadata, else what the certificate says."""
        key = (value, spiffe_id)
        found = self._callers.get(key)
        if found is None:
            if len(self._callers) >= MAX_CACHED:
                self._callers.clear()
            found = claimed_labels(value, spiffe_id) or peer_labels(spiffe_id)
            self._callers[key] = found
        return found

    def callee(self, value: str | None, identity: str | None, known: WorkloadLabels) -> WorkloadLabels:
        """destination_* labels of a response: believed metadata, else `known` (from the endpoint)."""
        if not value:
            return known
        key = (value, identity)
        if key in self._callees:
            found = self._callees[key]
        else:
            if len(self._callees) >= MAX_CACHED:
                self._callees.clear()
            found = self._callees[key] = claimed_labels(value, identity)
        return found if found is not None else known
