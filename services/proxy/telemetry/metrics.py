"""Istio's standard metrics and the proxy's own health metrics, in a per-sidecar prometheus-client registry.

Names, label sets and histogram buckets are Istio's: `istio_requests_total`,
`istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes` and the TCP set.
The TCP series are fed by TCP pass-through connections (telemetry/tcp.py); an HTTP-only mesh leaves them
empty, as Envoy does for HTTP filter chains. The HTTP series are plain counters rendered at scrape time
(http_series.py), so the request path takes no locks and builds no metric children.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from services.proxy.telemetry.http_series import HttpSeries
from services.proxy.telemetry.labels import LABEL_NAMES

DURATION_BUCKETS_MS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000,
)  # fmt: skip
"""Istio's buckets for istio_request_duration_milliseconds."""
BYTES_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000)
"""Istio's exponential buckets for the request and response size histograms."""

Labels = tuple[str, ...]


class StandardMetrics:
    """One sidecar's Istio metrics; `record_http` is the only call on the request path."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.http = HttpSeries(LABEL_NAMES, DURATION_BUCKETS_MS, BYTES_BUCKETS)
        registry.register(self.http)
        self.tcp_sent = Counter("istio_tcp_sent_bytes", "Bytes sent on TCP connections", LABEL_NAMES, registry=registry)
        self.tcp_received = Counter(
            "istio_tcp_received_bytes", "Bytes received on TCP connections", LABEL_NAMES, registry=registry
        )
        self.tcp_opened = Counter(
            "istio_tcp_connections_opened", "TCP connections opened", LABEL_NAMES, registry=registry
        )
        self.tcp_closed = Counter(
            "istio_tcp_connections_closed", "TCP connections closed", LABEL_NAMES, registry=registry
        )
        self.dropped = Counter(
            "isthmus_telemetry_errors", "Telemetry records dropped because recording failed", registry=registry
        )
        self.record_http = self.http.record
        """Record one request (label tuple in LABEL_NAMES order, duration, body sizes); the request path's call."""

    def record_tcp(self, labels: Labels, sent: int, received: int, opened: int = 0, closed: int = 0) -> None:
        if sent:
            self.tcp_sent.labels(*labels).inc(sent)
        if received:
            self.tcp_received.labels(*labels).inc(received)
        if opened:
            self.tcp_opened.labels(*labels).inc(opened)
        if closed:
            self.tcp_closed.labels(*labels).inc(closed)


ClusterStates = Callable[[], dict[str, dict[str, object]]]
"""Cluster name -> {"active", "pending", "retries": int, "ejected": [host:port]} (`ClusterRuntimes.describe`)."""
CLUSTER_GAUGES = (
    ("active", "isthmus_proxy_cluster_requests_active", "Upstream requests in flight per cluster"),
    ("pending", "isthmus_proxy_cluster_requests_pending", "Requests waiting for a connection per cluster"),
    ("retries", "isthmus_proxy_cluster_retries_active", "Retries in flight per cluster"),
)


class ProxyHealthCollector(Collector):
    """Read at scrape time, never on the request path: config version, certificate expiry, open connections,
    and per outbound cluster the requests in flight and the endpoints outlier detection ejected."""

    def __init__(
        self,
        proxy_id: str,
        config_version: Callable[[], str | None],
        cert_expiry: Callable[[], float | None],
        open_connections: Callable[[], dict[str, int]],
        clusters: ClusterStates | None = None,
    ) -> None:
        self._proxy_id = proxy_id
        self._config_version = config_version
        self._cert_expiry = cert_expiry
        self._open_connections = open_connections
        self._clusters = clusters

    def collect(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
        info = InfoMetricFamily("isthmus_proxy_config", "Config version the proxy runs", labels=["proxy_id"])
        info.add_metric([self._proxy_id], {"version": self._config_version() or ""})
        yield info
        expiry = self._cert_expiry()
        if expiry is not None:
            cert = GaugeMetricFamily(
                "isthmus_proxy_cert_expiry_timestamp_seconds", "Workload certificate notAfter (Unix time)"
            )
            cert.add_metric([], expiry)
            yield cert
        connections = GaugeMetricFamily(
            "isthmus_proxy_open_connections", "Downstream connections open per listener", labels=["listener"]
        )
        for listener, count in sorted(self._open_connections().items()):
            connections.add_metric([listener], count)
        yield connections
        if self._clusters is not None:
            yield from _cluster_families(self._clusters())


def _cluster_families(states: dict[str, dict[str, object]]) -> Iterator[GaugeMetricFamily]:
    ejected = GaugeMetricFamily(
        "isthmus_proxy_cluster_ejected_hosts", "Endpoints outlier detection holds ejected", labels=["cluster"]
    )
    for cluster, state in sorted(states.items()):
        hosts = state.get("ejected")
        ejected.add_metric([cluster], len(hosts) if isinstance(hosts, list) else 0)
    yield ejected
    for key, name, documentation in CLUSTER_GAUGES:
        family = GaugeMetricFamily(name, documentation, labels=["cluster"])
        for cluster, state in sorted(states.items()):
            value = state.get(key)
            family.add_metric([cluster], float(value) if isinstance(value, int | float) else 0.0)
        yield family


def proxy_registry(health: ProxyHealthCollector | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if health is not None:
        registry.register(health)
    return registry
