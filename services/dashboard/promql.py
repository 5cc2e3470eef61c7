"""The dashboard's edges from a Prometheus server, with the PromQL Istio's dashboards use.

Per edge (source app and version -> destination service and version, as reported by the source
sidecar): `rate(istio_requests_total[window])`, the share of it with a 5xx or no response, and
`histogram_quantile(0.99, ...)` over `istio_request_duration_milliseconds_bucket`. The result has the
shape `graph.edges` gives, so the page does not care where it came from. Any failure raises
`PrometheusUnavailable`; the caller falls back to scraping the sidecars.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import aiohttp

from services.dashboard.graph import UNKNOWN, EdgeKey

TIMEOUT = aiohttp.ClientTimeout(total=3)
WINDOW = "1m"
EDGE_LABELS = ("source_app", "source_version", "destination_service_name", "destination_version")
BY = ", ".join(EDGE_LABELS)
SOURCE = 'reporter="source"'

QUERIES = {
    "rps": f"sum by ({BY}) (rate(istio_requests_total{{{SOURCE}}}[{WINDOW}]))",
    "errors": f'sum by ({BY}) (rate(istio_requests_total{{{SOURCE},response_code=~"5..|0"}}[{WINDOW}]))',
    "p99": (
        f"histogram_quantile(0.99, sum by (le, {BY}) "
        f"(rate(istio_request_duration_milliseconds_bucket{{{SOURCE}}}[{WINDOW}])))"
    ),
    "total": f"sum by ({BY}) (istio_requests_total{{{SOURCE}}})",
    "mtls": f'sum by ({BY}) (istio_requests_total{{{SOURCE},destination_principal!="unknown"}})',
}


class PrometheusUnavailable(Exception):
    """The server could not be asked, or did not answer a query with a vector."""


async def query(session: aiohttp.ClientSession, base_url: str, promql: str) -> dict[EdgeKey, float]:
    """One instant query: edge -> value (NaN and infinite values dropped)."""
    url = f"{base_url.rstrip('/')}/api/v1/query"
    try:
        async with session.get(url, params={"query": promql}, timeout=TIMEOUT) as reply:
            body: Any = await reply.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        raise PrometheusUnavailable(f"{url}: {err or type(err).__name__}") from err
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        raise PrometheusUnavailable(f"{url}: query failed: {error or body!r}")
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusUnavailable(f"{url}: expected a vector, got {data.get('resultType')!r}")
    found: dict[EdgeKey, float] = {}
    for item in data.get("result") or []:
        try:
            metric, value = item["metric"], float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise PrometheusUnavailable(f"{url}: malformed sample {item!r}") from err
        if math.isfinite(value):
            found[_edge_key(metric)] = value
    return found


def _edge_key(metric: dict[str, str]) -> EdgeKey:
    app, version, service, destination = (metric.get(label, UNKNOWN) for label in EDGE_LABELS)
    return app, version, service, destination


async def edges(session: aiohttp.ClientSession, base_url: str) -> list[dict[str, Any]]:
    """Every edge Prometheus has seen requests on, with rates over WINDOW."""
    names = list(QUERIES)
    results = await asyncio.gather(*(query(session, base_url, QUERIES[name]) for name in names))
    by_name = dict(zip(names, results, strict=True))
    found = []
    for key in sorted(by_name["total"].keys() | by_name["rps"].keys()):
        rps = by_name["rps"].get(key, 0.0)
        errors = by_name["errors"].get(key, 0.0)
        p99 = by_name["p99"].get(key)
        src_app, src_version, dst_service, dst_version = key
        found.append(
            {
                "source": f"{src_app}:{src_version}",
                "target": f"{dst_service}:{dst_version}",
                "rps": round(rps, 3),
                "errorRate": round(errors / rps, 4) if rps > 0 else 0.0,
                "p99Ms": round(p99, 2) if p99 is not None and rps > 0 else None,
                "mtls": by_name["mtls"].get(key, 0.0) > 0,
                "total": by_name["total"].get(key, 0.0),
            }
        )
    return found
