"""The demo scenario: four workloads (order -> payment, order -> product v1/v2), the canary config, traffic."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from importlib import resources

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


async def _versions(session: aiohttp.ClientSession, url: str, count: int, headers: dict[str, str]) -> Counter[str]:
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
        versions = await _versions(session, product, requests, {})
        jason = await _versions(session, product, max(requests // 10, 10), {"end-user": "jason"})
        async with session.get(f"{order.app_url}/call/payment-service/pay") as reply:
            body = await reply.json(content_type=None)
            upstream = body.get("upstream") if isinstance(body, dict) else None
            caller = upstream.get("caller") if isinstance(upstream, dict) else None
    failures = sum(n for key, n in (versions + jason).items() if key.startswith("HTTP"))
    return TrafficReport(versions=versions, jason_versions=jason, payment_caller=caller, failures=failures)


def run_traffic(order: Workload, requests: int = 200) -> TrafficReport:
    return asyncio.run(drive(order, requests))
