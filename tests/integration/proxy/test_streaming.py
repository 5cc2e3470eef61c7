"""Large bodies stream through the outbound path both ways with bounded memory; WebSocket upgrades pass through."""

from __future__ import annotations

import resource
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.local.processes import free_port
from services.proxy.sidecar import Sidecar
from shared.model.proxy_config import ProxyConfig, cluster_name

pytestmark = pytest.mark.integration

CLUSTER = cluster_name("bulk.default.svc.cluster.local", 80)
SIZE = 1024 * 1024 * 1024
CHUNK = 256 * 1024
MEMORY_SLACK = 64 * 1024 * 1024
"""Peak RSS may grow by this much while 1 GiB passes each way; buffering a body whole would exceed it."""


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def generated(size: int) -> AsyncIterator[bytes]:
    block = b"\x5a" * CHUNK
    sent = 0
    while sent < size:
        piece = block[: min(CHUNK, size - sent)]
        sent += len(piece)
        yield piece


@pytest.fixture
async def bulk_app() -> AsyncIterator[int]:
    """Counts request bodies chunk by chunk (/count) and streams generated bodies out (/make/<bytes>)."""

    async def count(request: web.Request) -> web.Response:
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
        return web.Response(text=str(total))

    async def make(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        async for piece in generated(int(request.match_info["size"])):
            await response.write(piece)
        await response.write_eof()
        return response

    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            if message.type == aiohttp.WSMsgType.TEXT:
                await socket.send_str(f"echo:{message.data}")
            elif message.type == aiohttp.WSMsgType.BINARY:
                await socket.send_bytes(message.data[::-1])
        return socket

    app = web.Application(client_max_size=1024)
    app.router.add_post("/count", count)
    app.router.add_get("/make/{size}", make)
    app.router.add_get("/ws", ws)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


def config(sidecar: Sidecar, port: int) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "proxyId": sidecar.proxy_id,
            "service": sidecar.settings.service,
            "namespace": "default",
            "virtualHosts": [{"name": "bulk", "domains": ["bulk"], "routes": [{"route": [{"cluster": CLUSTER}]}]}],
            "clusters": [
                {
                    "name": CLUSTER,
                    "host": "bulk.default.svc.cluster.local",
                    "port": 80,
                    "endpoints": [{"address": "127.0.0.1", "port": port}],
                }
            ],
        }
    ).versioned()


async def ready_sidecar(make_sidecar: Any, bus: Any, port: int) -> Sidecar:
    sidecar: Sidecar = await make_sidecar("client", 1)
    cfg = config(sidecar, port)
    await bus.push(cfg)
    assert (await bus.ack(cfg.proxy_id, cfg.version)).accepted
    return sidecar


async def test_1_gib_each_way_with_bounded_memory(bulk_app: int, make_sidecar: Any, bus: Any) -> None:
    sidecar = await ready_sidecar(make_sidecar, bus, bulk_app)
    base = f"http://127.0.0.1:{sidecar.listeners['outbound'].port}"
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(f"{base}/count", data=generated(1024 * 1024), headers={"Host": "bulk"}) as reply:
            assert await reply.text() == str(1024 * 1024)  # warm-up: pools and buffers exist before measuring
        before = peak_rss()
        async with session.post(f"{base}/count", data=generated(SIZE), headers={"Host": "bulk"}) as reply:
            assert reply.status == 200
            assert await reply.text() == str(SIZE)
        received = 0
        async with session.get(f"{base}/make/{SIZE}", headers={"Host": "bulk"}) as reply:
            assert reply.status == 200
            async for chunk in reply.content.iter_any():
                received += len(chunk)
        assert received == SIZE
    growth = peak_rss() - before
    assert growth < MEMORY_SLACK, f"peak RSS grew by {growth / 2**20:.0f} MiB while 2 x 1 GiB passed"


async def test_websocket_upgrade_passes_through(bulk_app: int, make_sidecar: Any, bus: Any) -> None:
    sidecar = await ready_sidecar(make_sidecar, bus, bulk_app)
    base = f"http://127.0.0.1:{sidecar.listeners['outbound'].port}"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{base}/ws", headers={"Host": "bulk"}) as socket:
            await socket.send_str("hello")
            assert (await socket.receive(timeout=10)).data == "echo:hello"
            await socket.send_bytes(b"abc")
            assert (await socket.receive(timeout=10)).data == b"cba"
            await socket.close()
        assert socket.close_code == aiohttp.WSCloseCode.OK
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{base}/count", headers={"Host": "bulk"})
        assert refused.value.status == 405


async def test_a_streamed_response_on_a_kept_connection_is_relayed_whole_and_the_connection_serves_on(
    bulk_app: int, make_sidecar: Any, bus: Any
) -> None:
    """After the first download the sidecar holds a kept upstream connection, so the next requests are sent
    from the caller connection's callback; a body still arriving then streams on in the general path."""
    sidecar = await ready_sidecar(make_sidecar, bus, bulk_app)
    base = f"http://127.0.0.1:{sidecar.listeners['outbound'].port}"
    size = 8 * 1024 * 1024
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for _ in range(3):
            received = 0
            async with session.get(f"{base}/make/{size}", headers={"Host": "bulk"}) as reply:
                assert reply.status == 200
                async for chunk in reply.content.iter_any():
                    assert chunk == b"\x5a" * len(chunk)
                    received += len(chunk)
            assert received == size
            async with session.get(f"{base}/make/5", headers={"Host": "bulk"}) as reply:
                assert await reply.read() == b"\x5a" * 5
