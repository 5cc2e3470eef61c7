"""From two scrapes of every sidecar's Istio metrics to the service graph: requests/s, error rate, p99 per edge.

Edges come from the source reporter (`reporter="source"`), which sees every request a sidecar sent,
including those that never reached the destination (NR, UH, UF, UT): one edge per (source app and
version, destination service and version). Rates are counter increases between the last two scrapes
divided by the time between them (a counter that went down restarted: its new value is the increase).
Errors are 5xx and code 0 (no response). p99 is Prometheus' histogram_quantile over the increase of
`istio_request_duration_milliseconds` buckets. An edge is mTLS when the client verified a SPIFFE
identity at the destination (`destination_principal` known): the sidecar uses mTLS for every meshed endpoint.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "istio_requests_total"
DURATION_BUCKET = "istio_request_duration_milliseconds_bucket"
UNKNOWN = "unknown"

EdgeKey = tuple[str, str, str, str]
"""(source app, source version, destination service, destination version)."""


@dataclass
class EdgeCounters:
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)
    mtls: bool = False


@dataclass
class Totals:
    """Cumulative counters of the whole mesh at one moment."""

    at: float
    edges: dict[EdgeKey, EdgeCounters] = field(default_factory=dict)


def _edge_key(labels: dict[str, str]) -> EdgeKey:
    return (
        labels.get("source_app", UNKNOWN),
        labels.get("source_version", UNKNOWN),
        labels.get("destination_service_name", labels.get("destination_service", UNKNOWN)),
        labels.get("destination_version", UNKNOWN),
    )


def totals(at: float, expositions: Iterable[str]) -> Totals:
    """Sum the source-reported series of every sidecar's exposition text (unparseable texts are skipped)."""
    result = Totals(at)
    edges: dict[EdgeKey, EdgeCounters] = defaultdict(EdgeCounters)
    for text in expositions:
        try:
            families = list(text_string_to_metric_families(text))
        except Exception:  # one sidecar's garbage must not hide the others
            continue
        for family in families:
            for sample in family.samples:
                labels = sample.labels
                if labels.get("reporter") != "source":
                    continue
                if sample.name == REQUESTS:
                    edge = edges[_edge_key(labels)]
                    edge.requests += sample.value
                    code = labels.get("response_code", "0")
                    if code == "0" or code.startswith("5"):
                        edge.errors += sample.value
                    if labels.get("destination_principal", UNKNOWN) != UNKNOWN:
                        edge.mtls = True
                elif sample.name == DURATION_BUCKET:
                    bound = float(labels["le"])
                    edge = edges[_edge_key(labels)]
                    edge.buckets[bound] = edge.buckets.get(bound, 0.0) + sample.value
    result.edges = dict(edges)
    return result


def _increase(now: float, before: float) -> float:
    return now - before if now >= before else now


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts (le -> count)."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def edges(previous: Totals | None, current: Totals) -> list[dict[str, Any]]:
    """Per-edge rates between two totals (all zero when there is no previous one)."""
    elapsed = current.at - previous.at if previous is not None else 0.0
    found = []
    for key, now in sorted(current.edges.items()):
        before = previous.edges.get(key) if previous is not None else None
        requests = _increase(now.requests, before.requests) if before else (now.requests if previous else 0.0)
        errors = _increase(now.errors, before.errors) if before else (now.errors if previous else 0.0)
        buckets = {
            bound: _increase(count, before.buckets.get(bound, 0.0)) if before else count
            for bound, count in now.buckets.items()
        }
        p99 = quantile(0.99, buckets) if requests > 0 else None
        src_app, src_version, dst_service, dst_version = key
        found.append(
            {
                "source": f"{src_app}:{src_version}",
                "target": f"{dst_service}:{dst_version}",
                "rps": round(requests / elapsed, 3) if elapsed > 0 else 0.0,
                "errorRate": round(errors / requests, 4) if requests > 0 else 0.0,
                "p99Ms": round(p99, 2) if p99 is not None else None,
                "mtls": now.mtls,
                "total": now.requests,
            }
        )
    return found
