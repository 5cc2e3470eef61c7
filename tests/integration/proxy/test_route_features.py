"""Routes that answer themselves, CORS, mirroring and forwarded headers, through a real sidecar and real apps."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from services.proxy.sidecar import Sidecar
from shared.model.proxy_config import ProxyConfig, cluster_name

pytestmark = pytest.mark.integration

MAIN = cluster_name("catalog.default.svc.cluster.local", 80)
SHADOW = cluster_name("catalog.default.svc.cluster.local", 80, "shadow")


def config(sidecar: Sidecar, routes: list[dict[str, Any]], main: int, shadow: int | None = None) -> ProxyConfig:
    clusters = [(MAIN, main)] + ([(SHADOW, shadow)] if shadow is not None else [])
    return ProxyConfig.model_validate(
        {
            "proxyId": sidecar.proxy_id,
            "service": sidecar.settings.service,
            "namespace": "default",
            "virtualHosts": [{"name": "catalog", "domains": ["catalog"], "routes": routes}],
            "clusters": [
                {
                    "name": name,
                    "host": "catalog.default.svc.cluster.local",
                    "port": 80,
                    "endpoints": [{"address": "127.0.0.1", "port": port}],
                }
                for name, port in clusters
            ],
        }
    ).versioned()


async def apply(bus: Any, cfg: ProxyConfig) -> None:
    await bus.push(cfg)
    ack = await bus.ack(cfg.proxy_id, cfg.version)
    assert ack.accepted, ack.error


def url(sidecar: Sidecar, path: str) -> str:
    return f"http://127.0.0.1:{sidecar.listeners['outbound'].port}{path}"


async def test_redirect_and_direct_response_never_reach_the_app(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app = await make_app("catalog")
    sidecar = await make_sidecar("web", 1)
    routes: list[dict[str, Any]] = [
        {"match": [{"uri": {"prefix": "/old"}}], "redirect": {"uri": "/new", "redirectCode": 302}},
        {
            "match": [{"uri": {"prefix": "/down"}}],
            "directResponse": {"status": 503, "body": {"string": "back soon"}},
            "headers": {"response": {"set": {"x-maintenance": "1"}}},
        },
        {"route": [{"cluster": MAIN}]},
    ]
    await apply(bus, config(sidecar, routes, app.port))
    async with aiohttp.ClientSession() as session:
        async with session.get(url(sidecar, "/old/x?q=1"), headers={"Host": "catalog"}, allow_redirects=False) as reply:
            assert reply.status == 302
            assert reply.headers["Location"] == "http://catalog/new?q=1"
            assert "x-isthmus-response-flags" not in reply.headers
        async with session.get(url(sidecar, "/down"), headers={"Host": "catalog"}) as reply:
            assert (reply.status, await reply.text()) == (503, "back soon")
            assert reply.headers["x-maintenance"] == "1"
            assert "x-isthmus-response-flags" not in reply.headers
    assert app.seen == []


async def test_cors_preflight_is_answered_and_responses_get_cors_headers(
    make_app: Any, make_sidecar: Any, bus: Any
) -> None:
    app = await make_app("catalog")
    sidecar = await make_sidecar("web", 1)
    cors = {"allowOrigins": [{"prefix": "https://shop"}], "allowMethods": ["GET", "PUT"], "maxAge": "10m"}
    await apply(bus, config(sidecar, [{"route": [{"cluster": MAIN}], "corsPolicy": cors}], app.port))
    preflight = {"Host": "catalog", "Origin": "https://shop.example", "Access-Control-Request-Method": "PUT"}
    async with aiohttp.ClientSession() as session:
        async with session.options(url(sidecar, "/items"), headers=preflight) as reply:
            assert reply.status == 200
            assert reply.headers["Access-Control-Allow-Origin"] == "https://shop.example"
            assert reply.headers["Access-Control-Allow-Methods"] == "GET,PUT"
            assert reply.headers["Access-Control-Max-Age"] == "600"
        assert app.seen == []
        other = {**preflight, "Origin": "https://evil.example"}
        async with session.options(url(sidecar, "/items"), headers=other) as reply:
            assert reply.status == 200 and "Access-Control-Allow-Origin" not in reply.headers
        assert len(app.seen) == 1  # an unmatched preflight is forwarded
        ignoring = {**cors, "unmatchedPreflights": "IGNORE"}
        await apply(bus, config(sidecar, [{"route": [{"cluster": MAIN}], "corsPolicy": ignoring}], app.port))
        async with session.options(url(sidecar, "/items"), headers=other) as reply:
            assert reply.status == 200 and "Access-Control-Allow-Origin" not in reply.headers
        assert len(app.seen) == 1  # under IGNORE the proxy answers it
        async with session.get(
            url(sidecar, "/items"), headers={"Host": "catalog", "Origin": "https://shop.a"}
        ) as reply:
            assert reply.headers["Access-Control-Allow-Origin"] == "https://shop.a"


async def test_mirror_gets_a_copy_and_never_delays_the_real_response(
    make_app: Any, make_sidecar: Any, bus: Any
) -> None:
    main = await make_app("catalog")
    main.hold.set()  # the real upstream answers /slow at once
    shadow = await make_app("shadow")  # the mirror holds /slow until released
    sidecar = await make_sidecar("web", 1)
    routes = [{"route": [{"cluster": MAIN}], "mirrors": [{"cluster": SHADOW}]}]
    await apply(bus, config(sidecar, routes, main.port, shadow.port))
    async with aiohttp.ClientSession() as session:
        body = b"x" * 1000
        async with session.post(url(sidecar, "/slow"), headers={"Host": "catalog"}, data=body) as reply:
            assert reply.status == 200
            assert reply.headers["x-app"] == "catalog"
        await bus.eventually(lambda: _true(len(shadow.seen) == 1), 10.0, "the mirrored copy")
        copy = shadow.seen[0]
        assert copy["headers"]["host"] == "catalog-shadow"
        assert (copy["method"], copy["path"], copy["body_length"]) == ("POST", "/slow", 1000)
        shadow.hold.set()


async def test_forwarded_for_and_attempt_count(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app = await make_app("catalog")
    sidecar = await make_sidecar("web", 1)
    await apply(bus, config(sidecar, [{"route": [{"cluster": MAIN}]}], app.port))
    async with aiohttp.ClientSession() as session:
        headers = {"Host": "catalog", "X-Forwarded-For": "203.0.113.7"}
        async with session.get(url(sidecar, "/"), headers=headers) as reply:
            assert reply.status == 200
    seen = app.seen[0]["headers"]
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert seen["x-envoy-attempt-count"] == "1"


async def _true(value: bool) -> bool:
    await asyncio.sleep(0)
    return value


async def test_zero_timeouts_disable_them(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app = await make_app("catalog")
    sidecar = await make_sidecar("web", 1)
    route = {"route": [{"cluster": MAIN}], "timeout": "0s", "retries": {"attempts": 1, "perTryTimeout": "0s"}}
    await apply(bus, config(sidecar, [route], app.port))
    async with aiohttp.ClientSession() as session:
        async with session.get(url(sidecar, "/"), headers={"Host": "catalog"}) as reply:
            assert reply.status == 200
