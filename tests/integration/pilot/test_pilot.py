"""Pilot against a real nats-server and Consul agent: catalog and config changes reach proxies' KV keys."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from services.pilot.app import Pilot, open_bucket
from shared.bus.names import CONFIG_BUCKET, PROXY_CONFIG_BUCKET, config_key, proxy_key
from shared.model import dump_resource, parse_resource
from shared.model.proxy_config import ProxyConfig
from tests.integration.pilot.support import Catalog, eventually, mesh_meta

pytestmark = pytest.mark.integration


async def stored_config(kv: KeyValue, proxy_id: str) -> ProxyConfig | None:
    try:
        entry = await kv.get(proxy_key(proxy_id))
    except (KeyNotFoundError, KeyDeletedError):
        return None
    return ProxyConfig.from_json(entry.value or b"")


def endpoints(config: ProxyConfig, cluster: str) -> list[tuple[str, int]]:
    found = next((c for c in config.clusters if c.name == cluster), None)
    return [] if found is None else [(e.address, e.port) for e in found.endpoints]


async def put_resource(kv: KeyValue, document: dict[str, Any]) -> None:
    resource = parse_resource(document)
    key = config_key(resource.kind, resource.metadata.namespace, resource.metadata.name)
    await kv.put(key, json.dumps(dump_resource(resource)).encode())


async def test_catalog_and_config_changes_reach_the_proxies(pilot: Pilot, bus: NATS, catalog: Catalog) -> None:
    tag = uuid.uuid4().hex[:8]
    ns = f"it-{tag}"
    front, back = f"front-{tag}", f"back-{tag}"
    front_id = f"{front}-1"
    js = bus.jetstream()
    proxies = await open_bucket(js, PROXY_CONFIG_BUCKET)
    config = await open_bucket(js, CONFIG_BUCKET)

    await catalog.register(front, front_id, 21001, mesh_meta(front_id, ns, "v1"))
    await catalog.register(back, f"{back}-1", 21002, mesh_meta(f"{back}-1", ns, "v1"))
    await catalog.register(f"plain-{tag}", f"plain-{tag}-1", 21003)

    async def front_sees_back() -> ProxyConfig | None:
        got = await stored_config(proxies, front_id)
        return got if got and endpoints(got, f"outbound|80||{back}") == [("127.0.0.1", 21002)] else None

    first = await eventually(front_sees_back, "front's config lists back's instance")
    plain_cluster = next(c for c in first.clusters if c.name == f"outbound|80||plain-{tag}")
    assert [e.identity for e in plain_cluster.endpoints] == [None]
    back_cluster = next(c for c in first.clusters if c.name == f"outbound|80||{back}")
    assert back_cluster.endpoints[0].identity == f"spiffe://cluster.local/ns/{ns}/sa/sa"

    await config.put(config_key("VirtualService", ns, "broken"), b"{not json")
    await put_resource(
        config,
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": back, "namespace": ns},
            "spec": {
                "hosts": [back],
                "http": [
                    {
                        "route": [
                            {"destination": {"host": back, "subset": "v1"}, "weight": 80},
                            {"destination": {"host": back, "subset": "v2"}, "weight": 20},
                        ]
                    }
                ],
            },
        },
    )

    async def canary_routed() -> ProxyConfig | None:
        got = await stored_config(proxies, front_id)
        if got is None:
            return None
        host = next(v for v in got.virtual_hosts if v.name == back)
        weights = [(w.cluster, w.weight) for w in host.routes[0].route]
        return got if weights == [(f"outbound|80|v1|{back}", 80), (f"outbound|80|v2|{back}", 20)] else None

    await eventually(canary_routed, "front's config carries the canary VirtualService")

    await catalog.register(back, f"{back}-2", 21004, mesh_meta(f"{back}-2", ns, "v2"))

    async def new_instance_seen() -> bool:
        got = await stored_config(proxies, front_id)
        return got is not None and ("127.0.0.1", 21004) in endpoints(got, f"outbound|80||{back}")

    await eventually(new_instance_seen, "a newly registered instance appears in callers' configs")

    async def own_config_written() -> bool:  # pushes to different proxies land in no set order
        return await stored_config(proxies, f"{back}-2") is not None

    await eventually(own_config_written, "the new instance's own config written")

    await catalog.deregister(f"{back}-2")

    async def instance_gone() -> bool:
        got = await stored_config(proxies, front_id)
        return got is not None and endpoints(got, f"outbound|80||{back}") == [("127.0.0.1", 21002)]

    await eventually(instance_gone, "a deregistered instance disappears from callers' configs")
    assert pilot.metrics.config_rejected._value.get() >= 1
    await config.delete(config_key("VirtualService", ns, "broken"))
    await config.delete(config_key("VirtualService", ns, back))


async def test_debug_endpoints_report_proxies_and_metrics(pilot: Pilot, catalog: Catalog) -> None:
    tag = uuid.uuid4().hex[:8]
    proxy_id = f"solo-{tag}-1"
    await catalog.register(f"solo-{tag}", proxy_id, 21010, mesh_meta(proxy_id, "default", "v1"))
    async with aiohttp.ClientSession() as session:

        async def listed() -> bool:
            async with session.get(f"{pilot.server.url}/debug/proxies") as reply:
                body = await reply.json()
            return any(p["proxyId"] == proxy_id and p["version"] for p in body["proxies"])

        await eventually(listed, "/debug/proxies lists the new proxy")
        async with session.get(f"{pilot.server.url}/healthz") as reply:
            assert reply.status == 200
        async with session.get(f"{pilot.server.url}/metrics") as reply:
            text = await reply.text()
        assert "pilot_pushes_total" in text and "pilot_push_duration_seconds_bucket" in text
