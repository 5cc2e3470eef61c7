"""The sidecar's telemetry flags (metrics port, access log, tracing), parsed into `TelemetrySettings`.

Defaults follow Istio: metrics on port 15090, access log off (meshConfig.accessLogFile empty),
tracing off until a collector is named, 1 % sampling of new traces once it is.
"""

from __future__ import annotations

import argparse

from services.proxy.telemetry.setup import ACCESS_LOG_ENCODINGS, TelemetrySettings
from services.proxy.telemetry.tracing import DEFAULT_SAMPLING_PERCENT, TracingSettings
from shared import ports

OFF = "off"


def _prometheus_port(text: str) -> int | None:
    if text.lower() == OFF:
        return None
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a port nor 'off'") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535; 0 picks a free one)")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("telemetry")
    group.add_argument(
        "--prometheus-port",
        type=_prometheus_port,
        default=ports.PROXY_PROMETHEUS,
        help=f"Istio metrics on /metrics and /stats/prometheus (default {ports.PROXY_PROMETHEUS}; 0: any free; off)",
    )
    group.add_argument("--access-log-file", default=None, help="access log destination ('-': stdout; default: off)")
    group.add_argument("--access-log-encoding", type=str.upper, choices=ACCESS_LOG_ENCODINGS, default="TEXT")
    group.add_argument("--access-log-errors-only", action="store_true", help="log only failed requests")
    group.add_argument(
        "--trace-endpoint",
        default=None,
        help="OTLP collector: host:port for OTLP over gRPC, or an http://host:port/v1/traces URL for OTLP over HTTP "
        "(lighter: no grpc in the sidecar); default: no tracing",
    )
    group.add_argument(
        "--trace-sampling",
        type=float,
        default=DEFAULT_SAMPLING_PERCENT,
        help=f"percentage of new traces sampled (default {DEFAULT_SAMPLING_PERCENT})",
    )


def settings_from(args: argparse.Namespace) -> TelemetrySettings:
    """Raises ValueError naming the flag for values argparse cannot check alone."""
    return TelemetrySettings(
        prometheus_port=getattr(args, "prometheus_port", None),
        access_log_file=getattr(args, "access_log_file", None),
        access_log_encoding=getattr(args, "access_log_encoding", "TEXT"),
        access_log_errors_only=getattr(args, "access_log_errors_only", False),
        tracing=TracingSettings(
            endpoint=getattr(args, "trace_endpoint", None),
            sampling_percent=getattr(args, "trace_sampling", DEFAULT_SAMPLING_PERCENT),
        ),
    )
