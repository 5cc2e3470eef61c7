"""Locality-aware balancing through a real sidecar: the caller's own zone first, the next zone once it fails."""

from __future__ import annotations

from collections import Counter
from typing import Any

import aiohttp
import pytest

from services.proxy.sidecar import Sidecar
from shared.model.proxy_config import ProxyConfig, cluster_name
from tests.integration.proxy.catalog_config import apply

pytestmark = pytest.mark.integration

CATALOG = cluster_name("catalog.default.svc.cluster.local", 80)
OUTLIER = {"outlierDetection": {"consecutive5xxErrors": 2, "interval": "1s", "baseEjectionTime": "60s"}}


def catalog_config(sidecar: Sidecar, labelled: dict[int, dict[str, str]], policy: dict[str, Any]) -> ProxyConfig:
    """`catalog` on loopback ports, each endpoint with the given labels, under the given traffic policy."""
    return ProxyConfig.model_validate(
        {
            "proxyId": sidecar.proxy_id,
            "service": sidecar.settings.service,
            "namespace": "default",
            "virtualHosts": [
                {"name": "catalog", "domains": ["catalog"], "routes": [{"route": [{"cluster": CATALOG}]}]}
            ],
            "clusters": [
                {
                    "name": CATALOG,
                    "host": "catalog.default.svc.cluster.local",
                    "port": 80,
                    "endpoints": [
                        {"address": "127.0.0.1", "port": port, "labels": labels} for port, labels in labelled.items()
                    ],
                    "trafficPolicy": policy,
                }
            ],
        }
    ).versioned()


def located_config(sidecar: Sidecar, endpoints: dict[int, str]) -> ProxyConfig:
    """`catalog` on loopback ports, each endpoint labelled with its locality, with outlier detection."""
    return catalog_config(sidecar, {port: {"locality": locality} for port, locality in endpoints.items()}, OUTLIER)


async def answered_by(sidecar: Sidecar, count: int) -> Counter[str]:
    url = f"http://127.0.0.1:{sidecar.listeners['outbound'].port}/items"
    found: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.get(url, headers={"Host": "catalog"}) as reply:
                await reply.read()
                found[f"{reply.status} {reply.headers.get('x-app', '-')}"] += 1
    return found


async def test_traffic_stays_in_the_callers_zone_until_it_fails(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    near = await make_app("near")
    other_zone = await make_app("other-zone")
    other_region = await make_app("other-region")
    sidecar = await make_sidecar("web", 1, locality="us-east/zone-a")
    endpoints = {near.port: "us-east/zone-a", other_zone.port: "us-east/zone-b", other_region.port: "eu-west/zone-a"}
    await apply(bus, located_config(sidecar, endpoints))

    assert await answered_by(sidecar, 30) == Counter({"200 near": 30})

    near.fail_with = 503
    failing = await answered_by(sidecar, 2)  # two 5xx in a row eject it
    assert failing == Counter({"503 near": 2})
    assert await answered_by(sidecar, 30) == Counter({"200 other-zone": 30}), "the same region's other zone next"
    assert other_region.seen == []
