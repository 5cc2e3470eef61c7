"""Turns the proxy's telemetry flags into a `Telemetry` and serves its metrics on the Prometheus port.

`/metrics` and `/stats/prometheus` (Envoy's path, which Istio scrapes on 15090) give the same text
exposition. A port that cannot be bound costs the metrics endpoint only, never the proxy.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from services.proxy.listeners import Listener
from services.proxy.snapshot import ProxyState
from services.proxy.telemetry.access_log import AccessLog
from services.proxy.telemetry.labels import Workload
from services.proxy.telemetry.metrics import ProxyHealthCollector, StandardMetrics, proxy_registry
from services.proxy.telemetry.observe import Handler, Telemetry
from services.proxy.telemetry.tracing import Tracing, TracingSettings, otlp_exporter
from shared.clock import SYSTEM_CLOCK, Clock
from shared.identity.spiffe import InvalidSpiffeId, parse_spiffe_id

__all__ = ["Handler", "Telemetry", "TelemetrySettings", "build", "close", "open_connections", "prometheus_handler"]

log = logging.getLogger(__name__)

METRICS_PATHS = frozenset({"/metrics", "/stats/prometheus"})
ACCESS_LOG_ENCODINGS = ("TEXT", "JSON")


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    prometheus_port: int | None = None
    """None: no metrics at all; 0: any free port."""
    access_log_file: str | None = None
    """None: no access log; "-" or /dev/stdout: standard output; else a file appended to."""
    access_log_encoding: str = "TEXT"
    access_log_errors_only: bool = False
    tracing: TracingSettings = field(default_factory=TracingSettings)

    def __post_init__(self) -> None:
        if self.access_log_encoding not in ACCESS_LOG_ENCODINGS:
            raise ValueError(f"--access-log-encoding {self.access_log_encoding!r} is not one of TEXT, JSON")


def _trust_domain(principal: str) -> str:
    """The mesh id spans carry: the trust domain, as Istio's default mesh id is."""
    try:
        return parse_spiffe_id(principal).trust_domain
    except InvalidSpiffeId:
        return "cluster.local"


def _stream(path: str) -> TextIO:
    if path in ("-", "/dev/stdout"):
        return sys.stdout
    if path == "/dev/stderr":
        return sys.stderr
    return Path(path).open("a", buffering=1, encoding="utf-8")


def build(
    settings: TelemetrySettings,
    workload: Workload,
    state: ProxyState,
    proxy_id: str,
    health: ProxyHealthCollector | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Telemetry:
    """Raises ValueError naming the flag when a part cannot be set up (bad file, bad endpoint)."""
    metrics = StandardMetrics(proxy_registry(health)) if settings.prometheus_port is not None else None
    access_log = None
    if settings.access_log_file:
        try:
            stream = _stream(settings.access_log_file)
        except OSError as err:
            raise ValueError(f"--access-log-file {settings.access_log_file}: {err.strerror}") from err
        owned = stream not in (sys.stdout, sys.stderr)
        access_log = AccessLog(
            stream, settings.access_log_encoding == "JSON", settings.access_log_errors_only, owns_stream=owned
        )
    tracing = None
    if settings.tracing.endpoint:
        tracing = Tracing(
            workload.app,
            workload.namespace,
            proxy_id,
            otlp_exporter(settings.tracing.endpoint),
            settings.tracing.sampling_percent,
            revision=workload.version,
            mesh_id=_trust_domain(workload.principal),
        )
    return Telemetry(workload, state, proxy_id, metrics, access_log, tracing, clock)


def prometheus_handler(registry: CollectorRegistry) -> Callable[[web.BaseRequest], Any]:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.method != "GET" or request.path not in METRICS_PATHS:
            return web.Response(status=404, text="not found\n")
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle


async def close(telemetry: Telemetry) -> None:
    """Flush spans and log lines in a worker thread, off the event loop."""
    if telemetry.tracing is not None:
        await asyncio.to_thread(telemetry.tracing.shutdown)
    if telemetry.access_log is not None:
        await asyncio.to_thread(telemetry.access_log.close)


def open_connections(listener: Listener) -> int:
    """Downstream connections a listener holds open (0 when its server does not say)."""
    return listener.open_connections()
