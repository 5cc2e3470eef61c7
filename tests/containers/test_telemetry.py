"""Telemetry in the compose mesh: the real Prometheus container scrapes every sidecar's metrics port (15090),
found through the Consul catalog, and has Istio's standard request counter."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

from tests.containers.mesh import ComposeMesh, eventually

SIDECAR_JOB = "isthmus-sidecars"
# Prometheus scrapes every 15 s; its stand-in refreshes Consul targets on a similar period.
SCRAPE_WAIT_SECONDS = 75


def prometheus_get(mesh: ComposeMesh, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{mesh.host_port('prometheus', 9090)}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.loads(reply.read())
    assert body.get("status") == "success", body
    return body["data"]


def sidecar_targets(mesh: ComposeMesh) -> list[dict[str, Any]]:
    targets = prometheus_get(mesh, "/api/v1/targets", state="active")["activeTargets"]
    return [t for t in targets if t.get("labels", {}).get("job") == SIDECAR_JOB]


def test_prometheus_scrapes_istio_requests_total_from_the_sidecars(mesh: ComposeMesh) -> None:
    mesh.traffic("order-service-v1", "/call/product-service/", count=20, concurrency=4)

    def requests_total() -> list[dict[str, Any]] | None:
        result: list[dict[str, Any]] = prometheus_get(mesh, "/api/v1/query", query="istio_requests_total")["result"]
        return result or None

    try:
        series = eventually(requests_total, SCRAPE_WAIT_SECONDS, "istio_requests_total in Prometheus", interval=3)
    except AssertionError as error:
        summary = [
            f"{t['labels'].get('service')} {t['scrapeUrl']}: {t['health']} {t.get('lastError', '')}"
            for t in sidecar_targets(mesh)
        ]
        raise AssertionError(
            f"{error}\nPrometheus has no istio_requests_total from the sidecars (their metrics port 15090, "
            f"scraped through Consul). Sidecar targets:\n  " + ("\n  ".join(summary) or "none found in Consul")
        ) from error
    services = {s["metric"].get("service") for s in series}
    assert "order-service" in services or "product-service" in services, series
