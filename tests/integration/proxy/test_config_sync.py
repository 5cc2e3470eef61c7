"""Config through the real NATS KV: routing follows pushes, ACKs and NACKs land in the status bucket, disk fallback."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from services.proxy.config_watch import LAST_CONFIG_FILE
from services.proxy.sidecar import Sidecar
from shared.model.proxy_config import ProxyConfig, cluster_name

pytestmark = pytest.mark.integration

RATINGS = cluster_name("ratings.default.svc.cluster.local", 9080)


def plain_route_config(sidecar: Sidecar, app_port: int) -> ProxyConfig:
    """Route host `ratings` to a plain-text (no sidecar) endpoint."""
    return ProxyConfig.model_validate(
        {
            "proxyId": sidecar.proxy_id,
            "service": sidecar.settings.service,
            "namespace": "default",
            "virtualHosts": [
                {"name": "ratings", "domains": ["ratings"], "routes": [{"route": [{"cluster": RATINGS}]}]}
            ],
            "clusters": [
                {
                    "name": RATINGS,
                    "host": "ratings.default.svc.cluster.local",
                    "port": 9080,
                    "endpoints": [{"address": "127.0.0.1", "port": app_port}],
                }
            ],
        }
    ).versioned()


async def call_ratings(sidecar: Sidecar) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"http://127.0.0.1:{sidecar.listeners['outbound'].port}/", headers={"Host": "ratings"}
        ) as reply:
            return reply.status, reply.headers.get("x-app", "")


async def test_pushed_config_changes_routing_and_is_acked(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    first = await make_app("ratings-v1")
    second = await make_app("ratings-v2")
    sidecar = await make_sidecar("productpage", 1)
    assert await call_ratings(sidecar) == (503, "")  # no config yet

    config = plain_route_config(sidecar, first.port)
    await bus.push(config)
    ack = await bus.ack(sidecar.proxy_id, config.version)
    assert ack.accepted and ack.applied_version == config.version
    assert await call_ratings(sidecar) == (200, "ratings-v1")

    changed = plain_route_config(sidecar, second.port)
    await bus.push(changed)
    ack = await bus.ack(sidecar.proxy_id, changed.version)
    assert ack.accepted
    assert await call_ratings(sidecar) == (200, "ratings-v2")

    persisted = ProxyConfig.from_json((sidecar.settings.state_dir / LAST_CONFIG_FILE).read_bytes())
    assert persisted.version == changed.version


async def test_invalid_config_is_nacked_and_old_routing_kept(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app = await make_app("ratings-v1")
    sidecar = await make_sidecar("productpage", 1)
    good = plain_route_config(sidecar, app.port)
    await bus.push(good)
    await bus.ack(sidecar.proxy_id, good.version)

    broken = json.loads(good.to_json())
    broken["version"] = "broken-1"
    broken["virtualHosts"][0]["routes"][0]["route"][0]["cluster"] = "outbound|1||nowhere"
    await bus.push(json.dumps(broken).encode(), proxy_id=sidecar.proxy_id)
    nack = await bus.ack(sidecar.proxy_id, "broken-1")
    assert not nack.accepted
    assert "nowhere" in (nack.error or "")
    assert nack.applied_version == good.version
    assert await call_ratings(sidecar) == (200, "ratings-v1")

    await bus.push(
        b'{"proxyId": "' + sidecar.proxy_id.encode() + b'", "version": "garbage", "virtualHosts": 7}',
        proxy_id=sidecar.proxy_id,
    )
    garbage = await bus.ack(sidecar.proxy_id, "garbage")
    assert not garbage.accepted and "virtualHosts" in (garbage.error or "")
    assert await call_ratings(sidecar) == (200, "ratings-v1")


async def test_last_known_good_config_serves_without_nats(
    make_app: Any, make_sidecar: Any, bus: Any, tmp_path: Any
) -> None:
    app = await make_app("ratings-v1")
    state_dir = tmp_path / "persisted"
    online = await make_sidecar("productpage", 1, host="node-a", state_dir=state_dir)
    config = plain_route_config(online, app.port)
    await bus.push(config)
    await bus.ack(online.proxy_id, config.version)
    await online.stop()

    offline = await make_sidecar("productpage", 1, use_nats=False, state_dir=state_dir)
    assert offline.state.snapshot is not None
    assert offline.state.snapshot.version == config.version
    assert await call_ratings(offline) == (200, "ratings-v1")


async def test_health_and_admin_endpoints(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app = await make_app("ratings-v1")
    sidecar = await make_sidecar("productpage", 1)
    health = f"http://127.0.0.1:{sidecar.listeners['health'].port}/healthz/ready"
    admin = f"http://127.0.0.1:{sidecar.listeners['admin'].port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(health) as reply:
            assert reply.status == 503 and "no configuration" in await reply.text()
        config = plain_route_config(sidecar, app.port)
        await bus.push(config)
        await bus.ack(sidecar.proxy_id, config.version)
        async with session.get(health) as reply:
            assert reply.status == 200
        async with session.get(f"{admin}/config_dump") as reply:
            dump = await reply.json()
        async with session.get(f"{admin}/ready") as reply:
            assert reply.status == 200
    assert dump["version"] == config.version
    assert dump["config"]["proxyId"] == sidecar.proxy_id
    assert dump["certificate"]["spiffeId"] == "spiffe://cluster.local/ns/default/sa/productpage"
