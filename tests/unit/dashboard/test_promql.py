"""The dashboard against a stand-in of Prometheus' HTTP query API: Istio's PromQL in, edges out, fallback on failure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.dashboard import promql, server

EDGE = {
    "source_app": "productpage",
    "source_version": "v1",
    "destination_service_name": "reviews",
    "destination_version": "v2",
}


def vector(*samples: tuple[dict[str, str], str]) -> dict[str, Any]:
    result = [{"metric": metric, "value": [1700000000.123, value]} for metric, value in samples]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


ANSWERS = {
    promql.QUERIES["rps"]: vector((EDGE, "4")),
    promql.QUERIES["errors"]: vector((EDGE, "1")),
    promql.QUERIES["p99"]: vector((EDGE, "87.5")),
    promql.QUERIES["total"]: vector((EDGE, "240"), ({**EDGE, "destination_version": "v1"}, "12")),
    promql.QUERIES["mtls"]: vector((EDGE, "240")),
}


@pytest.fixture
async def prometheus() -> AsyncIterator[tuple[str, list[str]]]:
    """Answers the five queries the dashboard asks; anything else is a bad_data error, as Prometheus says it."""
    asked: list[str] = []

    async def query(request: web.Request) -> web.Response:
        text = request.query.get("query", "")
        asked.append(text)
        if text in ANSWERS:
            return web.json_response(ANSWERS[text])
        return web.json_response({"status": "error", "errorType": "bad_data", "error": "unknown query"}, status=400)

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", asked
    await runner.cleanup()


async def test_edges_come_from_istio_promql(prometheus: tuple[str, list[str]]) -> None:
    url, asked = prometheus
    async with aiohttp.ClientSession() as session:
        edges = await promql.edges(session, url)
    assert set(asked) == set(promql.QUERIES.values())
    assert edges == [
        {
            "source": "productpage:v1",
            "target": "reviews:v1",
            "rps": 0.0,
            "errorRate": 0.0,
            "p99Ms": None,
            "mtls": False,
            "total": 12.0,
        },
        {
            "source": "productpage:v1",
            "target": "reviews:v2",
            "rps": 4.0,
            "errorRate": 0.25,
            "p99Ms": 87.5,
            "mtls": True,
            "total": 240.0,
        },
    ]


async def test_the_view_names_prometheus_as_its_source(prometheus: tuple[str, list[str]]) -> None:
    url, _ = prometheus
    view = server.MeshView("127.0.0.1:1", nats_url=None, prometheus_url=url)
    async with aiohttp.ClientSession() as session:
        result = await view.refresh(session)
    assert result["dataSource"] == f"prometheus {url}"
    assert {edge["target"] for edge in result["edges"]} == {"reviews:v1", "reviews:v2"}


@pytest.mark.parametrize("path", ["/nothing-here", ""])
async def test_a_failing_prometheus_falls_back_to_the_sidecars(prometheus: tuple[str, list[str]], path: str) -> None:
    url, _ = prometheus
    broken = f"{url}{path}" if path else "http://127.0.0.1:1"
    view = server.MeshView("127.0.0.1:1", nats_url=None, prometheus_url=broken)
    async with aiohttp.ClientSession() as session:
        result = await view.refresh(session)
    assert result["dataSource"] == "sidecars"
    assert any(problem.startswith("prometheus: ") for problem in result["problems"])


async def test_a_query_error_is_unavailable(prometheus: tuple[str, list[str]]) -> None:
    url, _ = prometheus
    async with aiohttp.ClientSession() as session:
        with pytest.raises(promql.PrometheusUnavailable, match="unknown query"):
            await promql.query(session, url, "up")


async def test_without_prometheus_the_sidecars_are_the_source() -> None:
    view = server.MeshView("127.0.0.1:1", nats_url=None)
    async with aiohttp.ClientSession() as session:
        assert (await view.refresh(session))["dataSource"] == "sidecars"
