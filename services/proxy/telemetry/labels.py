"""Istio's standard metric labels, precomputed once per config version so a request only joins tuples.

Choices where a VM mesh differs from Kubernetes (documented, stable):
- workload name is `<app>-<version>` (Kubernetes would use the Deployment name, e.g. `reviews-v2`);
- `destination_service` and `destination_service_name` are the catalog host the cluster targets
  (pilot resolves hosts to Consul service names), `destination_service_namespace` the endpoints'
  namespace when they agree;
- the source reporter learns destination workload labels from the endpoint pilot sent (its Consul Meta),
  overridden by the callee's peer metadata response header when believed (`exchange.py`), and reports
  `connection_security_policy="unknown"` as Istio does on the client side;
- the destination reporter takes `source_principal` from the caller's certificate and the other source
  labels from its peer metadata header when believed; otherwise only `source_workload_namespace` (from
  the SPIFFE ID) is known and the rest are "unknown". Its `connection_security_policy` is `mutual_tls`
  for TLS callers and `none` for plain text (PERMISSIVE, DISABLE);
- on TCP connections the same metadata travels in a framed block right after an mTLS handshake that
  negotiated ALPN `istio-peer-exchange` (tcp_peer_exchange.py), with the same trust rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.consul import META_APP, META_NAMESPACE, META_VERSION
from shared.identity.spiffe import InvalidSpiffeId, parse_spiffe_id
from shared.model.proxy_config import Cluster, Endpoint, ProxyConfig

UNKNOWN = "unknown"
REPORTER_SOURCE = "source"
REPORTER_DESTINATION = "destination"
MUTUAL_TLS = "mutual_tls"
NO_TLS = "none"

LABEL_NAMES: tuple[str, ...] = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)

WorkloadLabels = tuple[str, str, str, str, str]
"""(workload, workload_namespace, principal, app, version) of one side."""
ServiceLabels = tuple[str, str, str]
"""(service, service_name, service_namespace) of the destination."""

Labels = tuple[str, ...]
"""Label values in LABEL_NAMES order, or the first of them."""
MAX_SOURCES = 1024
"""Label prefixes kept per config version for destinations named by callees' metadata."""
UNKNOWN_WORKLOAD: WorkloadLabels = (UNKNOWN,) * 5
UNKNOWN_SERVICE: ServiceLabels = (UNKNOWN,) * 3

PEER_KEYS: tuple[str, ...] = ("workload", "namespace", "identity", "app", "version")
"""Keys of a peer's workload in access logs and spans: Istio's peer metadata object (`downstream_peer`,
`upstream_peer` filter state) names them so; `identity` is the SPIFFE principal."""


def peer_fields(labels: WorkloadLabels | None) -> dict[str, str | None] | None:
    """A peer's workload as key -> value (None where unknown); None when nothing at all is known of it."""
    if labels is None or labels == UNKNOWN_WORKLOAD:
        return None
    return {key: (value if value != UNKNOWN else None) for key, value in zip(PEER_KEYS, labels, strict=True)}


@dataclass(frozen=True, slots=True)
class Workload:
    """This proxy's own workload."""

    app: str
    namespace: str
    version: str
    principal: str

    @property
    def labels(self) -> WorkloadLabels:
        return (f"{self.app}-{self.version}", self.namespace, self.principal, self.app, self.version)

    @property
    def service_labels(self) -> ServiceLabels:
        return (self.app, self.app, self.namespace)


def endpoint_labels(endpoint: Endpoint) -> WorkloadLabels:
    labels = endpoint.labels
    app = labels.get(META_APP, UNKNOWN)
    version = labels.get(META_VERSION, UNKNOWN)
    namespace = labels.get(META_NAMESPACE, UNKNOWN)
    workload = f"{app}-{version}" if app != UNKNOWN and version != UNKNOWN else UNKNOWN
    return (workload, namespace, endpoint.identity or UNKNOWN, app, version)


def cluster_service_labels(cluster: Cluster) -> ServiceLabels:
    namespaces = {e.labels.get(META_NAMESPACE) for e in cluster.endpoints}
    namespace = namespaces.pop() if len(namespaces) == 1 else None
    return (cluster.host, cluster.host, namespace or UNKNOWN)


def peer_labels(spiffe_uri: str | None) -> WorkloadLabels:
    """What the destination side knows of its caller: namespace and principal from the certificate."""
    if not spiffe_uri:
        return UNKNOWN_WORKLOAD
    try:
        namespace = parse_spiffe_id(spiffe_uri).namespace
    except InvalidSpiffeId:
        namespace = UNKNOWN
    return (UNKNOWN, namespace, spiffe_uri, UNKNOWN, UNKNOWN)


class LabelBook:
    """Destination labels of one config version: by cluster name and by (cluster, address, port), the latter
    with the leading label values of the source reporter's series to that endpoint."""

    def __init__(self, config: ProxyConfig | None, own: WorkloadLabels = UNKNOWN_WORKLOAD) -> None:
        """`own`: this proxy's workload labels, the source side of the series it reports as the source."""
        self.version = config.version if config is not None else None
        self._own = own
        self._services: dict[str, ServiceLabels] = {}
        self._sources: dict[tuple[str, str, int], tuple[WorkloadLabels, Labels]] = {}
        self._answered_as: dict[tuple[str | None, WorkloadLabels], Labels] = {}
        for cluster in config.clusters if config is not None else ():
            service = self._services[cluster.name] = cluster_service_labels(cluster)
            for endpoint in cluster.endpoints:
                key = (cluster.name, endpoint.address, endpoint.port)
                labels = endpoint_labels(endpoint)
                self._sources[key] = (labels, self._source_start(labels, service))

    def service(self, cluster: str | None) -> ServiceLabels:
        if cluster is None:
            return UNKNOWN_SERVICE
        return self._services.get(cluster, UNKNOWN_SERVICE)

    def endpoint(self, cluster: str | None, endpoint: Endpoint | None) -> WorkloadLabels:
        if cluster is None or endpoint is None:
            return UNKNOWN_WORKLOAD
        found = self._sources.get((cluster, endpoint.address, endpoint.port))
        return found[0] if found is not None else endpoint_labels(endpoint)

    def source(self, cluster: str | None, endpoint: Endpoint | None) -> tuple[WorkloadLabels, Labels]:
        """The destination's workload labels, and the label values a source reporter's series start with
        (reporter, source workload, destination workload, destination service), made once per version."""
        if cluster is not None and endpoint is not None:
            found = self._sources.get((cluster, endpoint.address, endpoint.port))
            if found is not None:
                return found
        destination = self.endpoint(cluster, endpoint)
        return destination, self._source_start(destination, self.service(cluster))

    def source_as(self, cluster: str | None, destination: WorkloadLabels) -> Labels:
        """As `source`, for a destination known from the callee's own metadata (kept for up to
        `MAX_SOURCES` pairs of cluster and destination per version)."""
        key = (cluster, destination)
        found = self._answered_as.get(key)
        if found is None:
            if len(self._answered_as) >= MAX_SOURCES:
                self._answered_as.clear()
            found = self._answered_as[key] = self._source_start(destination, self.service(cluster))
        return found

    def _source_start(self, destination: WorkloadLabels, service: ServiceLabels) -> Labels:
        return (REPORTER_SOURCE, *self._own, *destination, *service)
