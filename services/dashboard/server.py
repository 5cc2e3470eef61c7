"""The dashboard service: a poller that refreshes the mesh view in the background, and the page that shows it.

GET / is the page (vanilla JS + SVG from static/, nothing from a CDN), GET /api/graph the latest view as
JSON. Each --interval seconds the poller asks Prometheus for the edges (`--prometheus-url`, Istio's
PromQL in promql.py) or, without one or when it fails, scrapes every sidecar found in Consul itself;
the view names its data source. The page polls the JSON. Nothing here is on any request path of the mesh.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from services.dashboard import graph, promql, sources
from shared import ports

log = logging.getLogger("services.dashboard")

STATIC = Path(__file__).parent / "static"
DEFAULT_PORT = 15030
DEFAULT_INTERVAL = 5.0
PROMETHEUS_URL_ENV = "ISTHMUS_PROMETHEUS_URL"


class MeshView:
    """Holds the latest view; `refresh` builds the next one from Consul, the sidecars and NATS."""

    def __init__(self, consul_addr: str, nats_url: str | None, prometheus_url: str | None = None) -> None:
        self._consul = consul_addr
        self._nats = nats_url
        self._prometheus = prometheus_url
        self._previous: graph.Totals | None = None
        self.view: dict[str, Any] = {
            "nodes": [],
            "edges": [],
            "configChanges": [],
            "problems": [],
            "generatedAt": None,
            "dataSource": None,
        }

    async def refresh(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        problems: list[str] = []
        try:
            found = await sources.sidecars(session, self._consul)
        except (aiohttp.ClientError, TimeoutError) as err:
            problems.append(f"consul at {self._consul}: {err}")
            found = []
        edges: list[dict[str, Any]] | None = None
        data_source = "sidecars"
        if self._prometheus:
            try:
                edges = await promql.edges(session, self._prometheus)
                data_source = f"prometheus {self._prometheus}"
            except promql.PrometheusUnavailable as err:  # fail open: the sidecars are still there
                problems.append(f"prometheus: {err}; scraping the sidecars instead")
        if edges is None:
            edges = await self._scraped_edges(session, found)
        states: dict[str, dict[str, str]] = {}
        changes: list[dict[str, Any]] = []
        if self._nats:
            # Shielded: a refresh cancelled at shutdown lets the reads finish and close their NATS connections
            # (each read is bounded), instead of leaving a connection half open.
            states, changes = await asyncio.shield(self._from_bus(self._nats, problems))
        self.view = {
            "generatedAt": time.time(),
            "nodes": _nodes(found, edges, states),
            "edges": edges,
            "configChanges": changes,
            "problems": problems,
            "dataSource": data_source,
        }
        return self.view

    @staticmethod
    async def _from_bus(nats_url: str, problems: list[str]) -> tuple[dict[str, dict[str, str]], list[dict[str, Any]]]:
        states: dict[str, dict[str, str]] = {}
        changes: list[dict[str, Any]] = []
        try:
            states = await sources.sync_states(nats_url)
        except Exception as err:  # the page still shows the graph without the bus
            problems.append(f"proxy status from NATS: {err}")
        try:
            changes = await sources.config_changes(nats_url)
        except Exception as err:
            problems.append(f"config history from NATS: {err}")
        return states, changes

    async def _scraped_edges(
        self, session: aiohttp.ClientSession, found: list[sources.Sidecar]
    ) -> list[dict[str, Any]]:
        texts = await asyncio.gather(*(sources.scrape(session, sidecar) for sidecar in found))
        current = graph.totals(time.monotonic(), (text for text in texts if text is not None))
        edges = graph.edges(self._previous, current)
        self._previous = current
        return edges


def _nodes(
    found: list[sources.Sidecar], edges: list[dict[str, Any]], states: dict[str, dict[str, str]]
) -> list[dict[str, Any]]:
    nodes: dict[str, dict[str, Any]] = {}
    for sidecar in found:
        key = f"{sidecar.service}:{sidecar.version}"
        node = nodes.setdefault(
            key,
            {
                "id": key,
                "app": sidecar.service,
                "version": sidecar.version,
                "namespace": sidecar.namespace,
                "proxies": [],
            },
        )
        state = states.get(sidecar.proxy_id, {})
        node["proxies"].append(
            {
                "id": sidecar.proxy_id,
                "healthy": sidecar.healthy,
                "state": state.get("state", "UNKNOWN"),
                "sent": state.get("sent", "-"),
                "running": state.get("running", "-"),
                "metrics": sidecar.prometheus_port is not None,
            }
        )
    for edge in edges:
        for end in (edge["source"], edge["target"]):
            app, _, version = end.partition(":")
            nodes.setdefault(end, {"id": end, "app": app, "version": version, "namespace": "", "proxies": []})
    return sorted(nodes.values(), key=lambda node: node["id"])


async def _poll(view: MeshView, interval: float) -> None:
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                await view.refresh(session)
            except Exception as err:  # keep polling whatever one round hit
                log.warning("refresh failed: %s", err)
            await asyncio.sleep(interval)


def build_app(view: MeshView, interval: float) -> web.Application:
    async def page(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def api(_: web.Request) -> web.StreamResponse:
        return web.json_response({**view.view, "interval": interval})

    async def start_poller(app: web.Application) -> Any:
        task = asyncio.create_task(_poll(view, interval))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/api/graph", api)
    app.router.add_static("/static/", STATIC)
    app.cleanup_ctx.append(start_poller)
    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default=f"127.0.0.1:{DEFAULT_PORT}", help="host:port of the page")
    parser.add_argument("--consul-addr", default=os.environ.get(ports.CONSUL_ADDR_ENV, ports.DEFAULT_CONSUL_ADDR))
    parser.add_argument("--nats-url", default=os.environ.get(ports.NATS_URL_ENV, ports.DEFAULT_NATS_URL))
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help="seconds between scrapes")
    parser.add_argument(
        "--prometheus-url",
        default=os.environ.get(PROMETHEUS_URL_ENV) or None,
        help=f"read edges from this Prometheus (e.g. http://127.0.0.1:9090; default ${PROMETHEUS_URL_ENV}); "
        "without one, or when it fails, the sidecars are scraped directly",
    )


async def serve(args: argparse.Namespace) -> int:
    host, _, port_text = args.listen.rpartition(":")
    if not port_text.isdigit() or not host:
        raise ValueError(f"--listen {args.listen!r} is not host:port")
    if args.interval <= 0:
        raise ValueError(f"--interval {args.interval} must be positive")
    view = MeshView(args.consul_addr, args.nats_url, getattr(args, "prometheus_url", None))
    runner = web.AppRunner(build_app(view, args.interval), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port_text))
    await site.start()
    log.info("dashboard on http://%s", args.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(serve(args))
    except (ValueError, OSError) as err:
        log.error("%s", err)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="isthmus-dashboard", description="Isthmus mesh dashboard")
    add_arguments(parser)
    return run(parser.parse_args(argv))
