"""Istio metric names, buckets and label sets as exposed, and the health collector read at scrape time."""

from __future__ import annotations

from prometheus_client import generate_latest

from services.proxy.telemetry.labels import LABEL_NAMES
from services.proxy.telemetry.metrics import ProxyHealthCollector, StandardMetrics, proxy_registry

LABELS = tuple(f"{name}-value" for name in LABEL_NAMES)


def test_http_series_with_istio_names_and_buckets() -> None:
    metrics = StandardMetrics(proxy_registry())
    metrics.record_http(LABELS, 7.0, 10, 2000)
    metrics.record_http(LABELS, 700.0, 0, 0)
    registry = metrics.registry
    labels = dict(zip(LABEL_NAMES, LABELS, strict=True))
    assert registry.get_sample_value("istio_requests_total", labels) == 2
    assert registry.get_sample_value("istio_request_duration_milliseconds_bucket", {**labels, "le": "10.0"}) == 1
    assert registry.get_sample_value("istio_request_duration_milliseconds_bucket", {**labels, "le": "1000.0"}) == 2
    assert registry.get_sample_value("istio_response_bytes_bucket", {**labels, "le": "10000.0"}) == 2
    assert registry.get_sample_value("istio_request_bytes_sum", labels) == 10
    metrics.record_tcp(LABELS, sent=5, received=6, opened=1)
    assert registry.get_sample_value("istio_tcp_sent_bytes_total", labels) == 5
    assert registry.get_sample_value("istio_tcp_connections_opened_total", labels) == 1
    assert registry.get_sample_value("istio_tcp_connections_closed_total", labels) is None


def test_health_collector() -> None:
    version: list[str | None] = [None]
    health = ProxyHealthCollector("p1", lambda: version[0], lambda: 1234.0, lambda: {"inbound": 3, "outbound": 1})
    registry = proxy_registry(health)
    version[0] = "abc"
    text = generate_latest(registry).decode()
    assert 'isthmus_proxy_config_info{proxy_id="p1",version="abc"} 1.0' in text
    assert "isthmus_proxy_cert_expiry_timestamp_seconds 1234.0" in text
    assert 'isthmus_proxy_open_connections{listener="inbound"} 3.0' in text


def test_health_collector_reports_clusters() -> None:
    states: dict[str, dict[str, object]] = {
        "outbound|80||reviews": {"active": 2, "pending": 1, "retries": 0, "ejected": ["10.0.0.1:8080"]},
    }
    health = ProxyHealthCollector("p1", lambda: None, lambda: None, dict, lambda: states)
    registry = proxy_registry(health)
    labels = {"cluster": "outbound|80||reviews"}
    assert registry.get_sample_value("isthmus_proxy_cluster_ejected_hosts", labels) == 1
    assert registry.get_sample_value("isthmus_proxy_cluster_requests_active", labels) == 2
    assert registry.get_sample_value("isthmus_proxy_cluster_requests_pending", labels) == 1
    assert registry.get_sample_value("isthmus_proxy_cluster_retries_active", labels) == 0


def test_http_series_exposition_matches_prometheus_histograms() -> None:
    """Cumulative buckets up to +Inf, _count equal to the +Inf bucket, a value on a bound counted in it."""
    metrics = StandardMetrics(proxy_registry())
    for duration in (0.5, 0.7, 1.0, 5000.0, 4_000_000.0):
        metrics.record_http(LABELS, duration, 1, 100_000_000_000)
    registry = metrics.registry
    labels = dict(zip(LABEL_NAMES, LABELS, strict=True))

    def bucket(name: str, le: str) -> float | None:
        return registry.get_sample_value(f"{name}_bucket", {**labels, "le": le})

    assert bucket("istio_request_duration_milliseconds", "0.5") == 1
    assert bucket("istio_request_duration_milliseconds", "1.0") == 3
    assert bucket("istio_request_duration_milliseconds", "5000.0") == 4
    assert bucket("istio_request_duration_milliseconds", "3.6e+06") == 4
    assert bucket("istio_request_duration_milliseconds", "+Inf") == 5
    assert registry.get_sample_value("istio_request_duration_milliseconds_count", labels) == 5
    assert registry.get_sample_value("istio_request_duration_milliseconds_sum", labels) == 4_005_002.2
    assert bucket("istio_request_bytes", "1.0") == 5
    assert bucket("istio_response_bytes", "1e+08") == 0
    assert bucket("istio_response_bytes", "+Inf") == 5
    text = generate_latest(registry).decode()
    assert "# TYPE istio_requests_total counter" in text
    assert "# TYPE istio_request_duration_milliseconds histogram" in text
