"""Spans for the sidecar, OpenTelemetry SDK with the OTLP gRPC exporter: client spans outbound, server spans inbound.

Off unless an OTLP endpoint is given. Each sidecar has its own TracerProvider (resource
`service.name=<app>.<namespace>`, Istio's canonical naming); spans leave through a BatchSpanProcessor,
whose thread does the exporting, so a slow or absent collector never delays a request. Sampling is
parent-based: a caller's decision is kept, a new trace is sampled at the configured percentage
(Istio's default 1 %). Span names follow Envoy: `<authority><path without query>`; attributes are
Envoy's (`http.method`, `http.url`, `http.status_code`, `upstream_cluster`, `response_flags`,
`guid:x-request-id`, `node_id`, `peer.address`) plus Istio's on every span (`istio.canonical_service`,
`istio.canonical_revision`, `istio.namespace`, `istio.mesh_id`) and the peer's workload, as Istio tags
spans from its peer metadata: `istio.downstream.<key>` on server spans (the caller),
`istio.upstream.<key>` on client spans (the destination), keys as in labels.PEER_KEYS, unknown ones left out.
The SDK and the exporter are imported when a Tracing is built, so a sidecar without tracing never loads them.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, get_current_span

from services.proxy.telemetry.labels import WorkloadLabels, peer_fields
from services.proxy.telemetry.propagation import extract, inject

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

DEFAULT_SAMPLING_PERCENT = 1.0
DOWNSTREAM = "istio.downstream"
UPSTREAM = "istio.upstream"


def peer_attributes(prefix: str, labels: WorkloadLabels | None) -> dict[str, str]:
    """`<prefix>.<key>` span attributes for what is known of a peer's workload."""
    fields = peer_fields(labels) or {}
    return {f"{prefix}.{key}": value for key, value in fields.items() if value is not None}


@dataclass(frozen=True, slots=True)
class TracingSettings:
    endpoint: str | None = None
    """OTLP gRPC collector, host:port or http(s)://host:port; None turns tracing off."""
    sampling_percent: float = DEFAULT_SAMPLING_PERCENT

    def __post_init__(self) -> None:
        if not 0.0 <= self.sampling_percent <= 100.0:
            raise ValueError(f"--trace-sampling {self.sampling_percent} is not a percentage (0-100)")


OTLP_HTTP_PATH = "/v1/traces"


def otlp_exporter(endpoint: str) -> SpanExporter:
    """OTLP over HTTP for an `http(s)://host:port/v1/traces` URL (no grpc in the sidecar), else OTLP over gRPC
    to `host:port` (`https://host:port`: with TLS)."""
    if "://" in endpoint and endpoint.rstrip("/").endswith(OTLP_HTTP_PATH):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

        return HttpSpanExporter(endpoint=endpoint.rstrip("/"), timeout=5)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    secure = endpoint.startswith("https://")
    target = endpoint.split("://", 1)[1] if "://" in endpoint else endpoint
    return OTLPSpanExporter(endpoint=target, insecure=not secure, timeout=5)


class Tracing:
    """One sidecar's tracer; `start` opens a span continuing the trace in the incoming headers."""

    def __init__(
        self,
        service: str,
        namespace: str,
        proxy_id: str,
        exporter: SpanExporter,
        sampling_percent: float = DEFAULT_SAMPLING_PERCENT,
        schedule_delay_ms: int = 1000,
        *,
        revision: str = "latest",
        mesh_id: str = "cluster.local",
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        self._provider = TracerProvider(
            resource=Resource.create({"service.name": f"{service}.{namespace}", "service.namespace": namespace}),
            sampler=ParentBased(TraceIdRatioBased(sampling_percent / 100.0)),
        )
        self._provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_ms))
        self._tracer = self._provider.get_tracer("isthmus.proxy")
        self._static = {
            "node_id": proxy_id,
            "component": "proxy",
            "istio.canonical_service": service,
            "istio.canonical_revision": revision,
            "istio.namespace": namespace,
            "istio.mesh_id": mesh_id,
        }

    def start(self, kind: SpanKind, name: str, incoming: Mapping[str, str], outgoing: MutableMapping[str, str]) -> Span:
        """A started span, child of the caller's; `outgoing` gets headers naming it as the parent."""
        parent = extract(incoming)
        span = self._tracer.start_span(name, context=parent, kind=kind, attributes=self._static)
        parent_span = get_current_span(parent) if parent is not None else None
        parent_id = parent_span.get_span_context().span_id if parent_span is not None else None
        inject(span.get_span_context(), outgoing, parent_id)
        return span

    @staticmethod
    def finish(span: Span, status: int, attributes: Mapping[str, str | int]) -> None:
        if span.is_recording():
            span.set_attributes(dict(attributes))
            span.set_attribute("http.status_code", status)
            if status == 0 or status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        span.end()

    def shutdown(self) -> None:
        """Flush and stop the exporter thread (blocking: run it off the event loop)."""
        self._provider.shutdown()
