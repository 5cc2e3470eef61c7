"""Workload metadata sidecars exchange in request and response headers, as Istio's metadata exchange does.

The value of `x-envoy-peer-metadata` is base64 of compact JSON with Istio's node metadata keys
(`NAMESPACE`, `WORKLOAD_NAME`, `SERVICE_ACCOUNT`, `LABELS.app`, `LABELS.version`);
`x-envoy-peer-metadata-id` carries the sender's proxy id. Each hop removes what it received and sets its own:
an application never sees these headers and cannot set them.

Plain-TCP connections between sidecars carry the same value in a block instead, as Istio's TCP metadata
exchange frames it: on an mTLS connection whose ALPN is `istio-peer-exchange`, each side's first bytes are
the magic 0x3D230467 and the payload length (both 4-byte big-endian), then the payload (here the ASCII header
value, where Istio puts a protobuf Any); the caller's side sends first.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass

from multidict import istr

PEER_METADATA = istr("x-envoy-peer-metadata")
PEER_METADATA_ID = istr("x-envoy-peer-metadata-id")
PEER_METADATA_HEADERS = frozenset({PEER_METADATA, PEER_METADATA_ID})
"""Lower-case names (case-insensitive header keys, equal to the plain strings); proxies strip both from
everything they forward."""
MAX_ENCODED = 4096
"""A longer value is not decoded (it cannot be one of ours)."""
ALPN_PEER_EXCHANGE = "istio-peer-exchange"
BLOCK_MAGIC = 0x3D230467
BLOCK_HEADER = struct.Struct("!II")
"""Magic, then payload length, in network byte order."""


@dataclass(frozen=True, slots=True)
class PeerMetadata:
    namespace: str
    workload: str
    service_account: str
    app: str
    version: str

    def encode(self) -> str:
        document = {
            "NAMESPACE": self.namespace,
            "WORKLOAD_NAME": self.workload,
            "SERVICE_ACCOUNT": self.service_account,
            "LABELS": {"app": self.app, "version": self.version},
        }
        compact = json.dumps(document, separators=(",", ":"), sort_keys=True)
        return base64.b64encode(compact.encode()).decode("ascii")


def decode(value: str) -> PeerMetadata:
    """Raises ValueError for anything that is not a well-formed metadata value."""
    if len(value) > MAX_ENCODED:
        raise ValueError("peer metadata too long")
    try:
        document = json.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"peer metadata is not base64 JSON: {err}") from err
    if not isinstance(document, dict):
        raise ValueError("peer metadata is not an object")
    labels = document.get("LABELS", {})
    if not isinstance(labels, dict):
        raise ValueError("peer metadata LABELS is not an object")
    fields = (
        document.get("NAMESPACE"),
        document.get("WORKLOAD_NAME"),
        document.get("SERVICE_ACCOUNT"),
        labels.get("app"),
        labels.get("version"),
    )
    if not all(isinstance(field, str) and field for field in fields):
        raise ValueError("peer metadata lacks a namespace, workload, service account, app or version")
    namespace, workload, account, app, version = (str(field) for field in fields)
    return PeerMetadata(namespace, workload, account, app, version)


def headers_for(metadata: PeerMetadata, proxy_id: str) -> tuple[tuple[str, str], ...]:
    """The (name, value) pairs a proxy adds, computed once per proxy."""
    return ((PEER_METADATA, metadata.encode()), (PEER_METADATA_ID, proxy_id))


def block_for(metadata: PeerMetadata) -> bytes:
    """The block a sidecar sends first on a TCP connection that negotiated `istio-peer-exchange`."""
    payload = metadata.encode().encode("ascii")
    return BLOCK_HEADER.pack(BLOCK_MAGIC, len(payload)) + payload
