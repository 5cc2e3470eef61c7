"""Requests through the real mesh: app -> sidecar -> mTLS -> sidecar -> app, with routing from applied config."""

from __future__ import annotations

import asyncio
import math
import time
import urllib.error
from collections import Counter
from collections.abc import Callable
from functools import partial

import aiohttp
import pytest

from services.cli.proxy_status import SYNCED, collect
from services.local.mesh import LocalMesh, Workload

pytestmark = pytest.mark.integration

SPLIT_50_50 = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: product-service, namespace: shop}
spec:
  hosts: [product-service]
  http:
  - name: jason-gets-v2
    match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: product-service, subset: v2}
  - name: all-v2
    route:
    - destination: {host: product-service, subset: v1}
      weight: 0
    - destination: {host: product-service, subset: v2}
      weight: 100
"""

BROKEN = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: product-service, namespace: shop}
spec:
  hosts: [product-service]
  http:
  - route:
    - destination: {host: product-service, subset: v1}
      weight: -5
"""


async def product_versions(order: Workload, count: int, headers: dict[str, str] | None = None) -> Counter[str]:
    seen: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def one() -> None:
            async with session.get(f"{order.app_url}/call/product-service/", headers=headers or {}) as reply:
                body = await reply.json(content_type=None)
                seen[body["upstream"]["version"] if reply.status == 200 else f"HTTP {reply.status}"] += 1

        for start in range(0, count, 16):
            await asyncio.gather(*(one() for _ in range(min(16, count - start))))
    return seen


async def eventually(check: Callable[[], object], within: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    last: object = None
    while time.monotonic() < deadline:
        result = check()
        last = await result if asyncio.iscoroutine(result) else result
        if last:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not reached within {within}s (last: {last!r})")


async def all_synced(mesh: LocalMesh) -> bool:
    assert mesh.control_plane is not None
    rows = await collect(mesh.control_plane.nats_url)
    ours = {w.proxy_id for w in mesh.workloads}
    states = {row.proxy_id: row.state for row in rows if row.proxy_id in ours}
    return len(states) == len(ours) and all(state == SYNCED for state in states.values())


async def test_order_reaches_payment_over_mtls_with_its_identity(order: Workload) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"{order.app_url}/call/payment-service/pay") as reply:
            body = await reply.json()
    assert reply.status == 200, body
    assert body["upstream"]["service"] == "payment-service"
    assert body["upstream"]["caller"] == "spiffe://cluster.local/ns/shop/sa/order-service"


async def test_every_proxy_reports_synced(mesh: LocalMesh) -> None:
    await eventually(lambda: all_synced(mesh), what="all proxies SYNCED")


async def healthy_endpoints(workload: Workload, cluster: str) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{workload.admin_url}/config_dump") as reply:
            dump = await reply.json()
    clusters = {c["name"]: c for c in (dump.get("config") or {}).get("clusters", [])}
    return sum(1 for e in clusters.get(cluster, {}).get("endpoints", []) if e.get("healthy"))


async def test_canary_splits_90_10_and_jason_always_gets_v2(mesh: LocalMesh, order: Workload) -> None:
    for subset in ("v1", "v2"):
        cluster = f"outbound|80|{subset}|product-service"
        await eventually(partial(healthy_endpoints, order, cluster), what=f"a healthy endpoint in {cluster}")
    versions = await product_versions(order, 1000)
    assert set(versions) <= {"v1", "v2"}, versions
    sigma = math.sqrt(1000 * 0.1 * 0.9)
    assert abs(versions["v2"] - 100) <= 3 * sigma, versions
    jason = await product_versions(order, 50, {"end-user": "jason"})
    assert jason == Counter({"v2": 50})


async def test_weight_change_shifts_traffic_and_invalid_config_changes_nothing(
    mesh: LocalMesh, order: Workload
) -> None:
    mesh.apply_text("all-v2.yaml", SPLIT_50_50)

    async def only_v2() -> bool:
        return (await product_versions(order, 20)) == Counter({"v2": 20})

    await eventually(only_v2, what="all traffic on v2 after the weight change")

    with pytest.raises(urllib.error.HTTPError) as rejected:
        mesh.apply_text("broken.yaml", BROKEN)
    message = rejected.value.read().decode()
    assert rejected.value.code == 400
    assert "broken.yaml" in message and "spec.http[0].route[0].weight" in message, message

    assert await product_versions(order, 100) == Counter({"v2": 100})
