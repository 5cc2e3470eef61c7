"""The demo scenario: four workloads (order -> payment, order -> product v1/v2), the canary config, traffic."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import Any

import aiohttp

from services.local.mesh import LocalMesh, Workload

NAMESPACE = "shop"
WORKLOADS = (
    ("order-service", "v1"),
    ("payment-service", "v1"),
    ("product-service", "v1"),
    ("product-service", "v2"),
)
CONFIG_FILES = ("destination-rules.yaml", "canary.yaml")


def demo_config() -> list[tuple[str, str]]:
    """(file name, YAML text) of the demo's config, shipped inside the package."""
    folder = resources.files("services.demoapp") / "config"
    return [(name, (folder / name).read_text()) for name in CONFIG_FILES]


# Clusters order-service's sidecar needs with a healthy endpoint before the demo drives traffic.
CALLER_CLUSTERS = (
    "outbound|80|v1|product-service",
    "outbound|80|v2|product-service",
    "outbound|80||payment-service",
)


def healthy_clusters(config_dump: dict[str, Any]) -> set[str]:
    clusters = (config_dump.get("config") or {}).get("clusters", [])
    return {c["name"] for c in clusters if any(e.get("healthy") for e in c.get("endpoints", []))}


async def wait_for_clusters(caller: Workload, names: tuple[str, ...], within: float = 30.0) -> None:
    """Polls the caller sidecar's config dump until every named cluster has a healthy endpoint."""
    deadline = time.monotonic() + within
    seen: set[str] = set()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            async with session.get(f"{caller.admin_url}/config_dump") as reply:
                seen = healthy_clusters(await reply.json())
            if seen.issuperset(names):
                return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{caller.service}'s sidecar has no healthy endpoint for {sorted(set(names) - seen)}")


def start_workloads(mesh: LocalMesh) -> dict[str, Workload]:
    started = {}
    for service, version in WORKLOADS:
        started[f"{service}-{version}"] = mesh.add_workload(service, version, namespace=NAMESPACE)
    return started


@dataclass(frozen=True)
class TrafficReport:
    versions: Counter[str]
    jason_versions: Counter[str]
    payment_caller: str | None
    failures: int


async def versions_seen(
    session: aiohttp.ClientSession, url: str, count: int, headers: dict[str, str] | None = None
) -> Counter[str]:
    """Calls `url` (an app's /call/...) `count` times: how often each upstream version answered, or HTTP <code>."""
    seen: Counter[str] = Counter()
    for _ in range(count):
        async with session.get(url, headers=headers) as reply:
            body = await reply.json(content_type=None)
            upstream = body.get("upstream") if isinstance(body, dict) else None
            version = upstream.get("version") if isinstance(upstream, dict) else None
            seen[str(version) if reply.status == 200 and version else f"HTTP {reply.status}"] += 1
    return seen


async def drive(order: Workload, requests: int = 200) -> TrafficReport:
    """Calls order-service's app, which calls product-service and payment-service through its sidecar."""
    product = f"{order.app_url}/call/product-service/"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        versions = await versions_seen(session, product, requests, {})
        jason = await versions_seen(session, product, max(requests // 10, 10), {"end-user": "jason"})
        async with session.get(f"{order.app_url}/call/payment-service/pay") as reply:
            body = await reply.json(content_type=None)
            upstream = body.get("upstream") if isinstance(body, dict) else None
            caller = upstream.get("caller") if isinstance(upstream, dict) else None
    failures = sum(n for key, n in (versions + jason).items() if key.startswith("HTTP"))
    return TrafficReport(versions=versions, jason_versions=jason, payment_caller=caller, failures=failures)


def run_traffic(order: Workload, requests: int = 200) -> TrafficReport:
    async def ready_then_drive() -> TrafficReport:
        await wait_for_clusters(order, CALLER_CLUSTERS)
        return await drive(order, requests)

    return asyncio.run(ready_then_drive())
