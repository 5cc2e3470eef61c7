"""The dashboard page in a real headless Chromium: it draws the graph of a running mesh and follows its traffic."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import nats
import pytest
from aiohttp import web

from services.dashboard.server import MeshView, build_app
from services.local.processes import free_port
from services.proxy.kv import ensure_bucket
from services.proxy.sidecar import Sidecar
from shared.bus.names import PROXY_CONFIG_BUCKET, proxy_key
from shared.model.proxy_config import ProxyConfig
from tests.integration.dashboard.conftest import Browser
from tests.integration.telemetry.conftest import MeshFactory, empty_config, route_to

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def dashboard(consul_addr: str, nats_url: str) -> AsyncIterator[str]:
    runner = web.AppRunner(build_app(MeshView(consul_addr, nats_url), interval=0.5), handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def push(client: Any, config: ProxyConfig, sidecar: Sidecar) -> None:
    bucket = await ensure_bucket(client.jetstream(), PROXY_CONFIG_BUCKET)
    await bucket.put(proxy_key(config.proxy_id), config.versioned().to_json())
    await asyncio.wait_for(sidecar.config.applied.wait(), 30)


class Traffic:
    """Keeps requests flowing from the caller's app side while the page is watched; `path` may change."""

    def __init__(self, caller: Sidecar, host: str) -> None:
        self.path = "/ok"
        self._url = f"http://127.0.0.1:{caller.listeners['outbound'].port}"
        self._host = host
        self.sent = 0

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                async with session.get(self._url + self.path, headers={"Host": self._host}) as reply:
                    await reply.read()
                self.sent += 1
                await asyncio.sleep(0.02)


async def until(browser: Browser, expression: str, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = await browser.evaluate(expression)
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {within}s waiting for {what}; last: {last}")


async def test_page_draws_the_live_graph_and_follows_traffic(
    browser: Browser, make_sidecar: MeshFactory, consul_addr: str, nats_url: str
) -> None:
    suffix = uuid.uuid4().hex[:6]
    web_app, api = f"dash-web-{suffix}", f"dash-api-{suffix}"
    client = await nats.connect(nats_url)
    try:
        caller = await make_sidecar(web_app, consul_addr=consul_addr, nats=client)
        callee = await make_sidecar(api, "v2", consul_addr=consul_addr, nats=client)
        await push(client, route_to(caller, callee, host=api), caller)
        await push(client, empty_config(callee), callee)
        traffic = Traffic(caller, api)
        sender = asyncio.create_task(traffic.run())
        try:
            async with dashboard(consul_addr, nats_url) as url:
                await browser.navigate(url)
                edge = f'document.querySelector(\'g.edge[data-source="{web_app}:v1"][data-target="{api}:v2"]\')'
                healthy = await until(
                    browser,
                    f"{edge} && Number({edge}.dataset.rps) > 0 && {edge}.dataset",
                    60,
                    "an edge with traffic",
                )
                assert healthy["mtls"] == "true" and float(healthy["errorRate"]) == 0.0
                nodes = await browser.evaluate("[...document.querySelectorAll('g.node')].map(n => n.dataset.id)")
                assert {f"{web_app}:v1", f"{api}:v2"} <= set(nodes)
                synced = await until(
                    browser,
                    f"[...document.querySelectorAll('#proxies tbody tr')]"
                    f".filter(r => r.textContent.includes('{web_app}') && r.textContent.includes('SYNCED')).length",
                    60,
                    "the caller's proxy shown as SYNCED",
                )
                assert synced == 1

                traffic.path = "/fail"  # the app now answers 503
                failing = await until(
                    browser,
                    f"{edge} && Number({edge}.dataset.errorRate) > 0.5 && {edge}.getAttribute('class')",
                    60,
                    "the edge to turn red",
                )
                assert "failing" in failing
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    finally:
        await client.close()
