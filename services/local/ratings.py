"""The demo's gRPC service: ratings v1 and v2 behind sidecars declared `--protocol grpc`, split 50/50 by a
VirtualService (retrying UNAVAILABLE), called over HTTP/2 by a gRPC client through order-service's sidecar."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass

import grpc
import grpc.aio

from services.demoapp.ratings import GET
from services.local.demo import NAMESPACE, wait_for_clusters
from services.local.mesh import LocalMesh, Workload

SERVICE = "ratings"
VERSIONS = ("v1", "v2")
CLUSTERS = tuple(f"outbound|80|{version}|{SERVICE}" for version in VERSIONS)


def start_ratings(mesh: LocalMesh) -> list[Workload]:
    return [mesh.add_workload(SERVICE, version, namespace=NAMESPACE, grpc=True) for version in VERSIONS]


def ratings_config() -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {SERVICE}, namespace: {NAMESPACE}}}
spec:
  host: {SERVICE}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {SERVICE}, namespace: {NAMESPACE}}}
spec:
  hosts: [{SERVICE}]
  http:
  - match: [{{uri: {{prefix: /demo.Ratings/}}}}]
    retries: {{attempts: 2, retryOn: unavailable}}
    route:
    - {{destination: {{host: {SERVICE}, subset: v1}}, weight: 50}}
    - {{destination: {{host: {SERVICE}, subset: v2}}, weight: 50}}
"""


@dataclass(frozen=True)
class RatingsReport:
    versions: Counter[str]
    callers: frozenset[str]
    failures: int

    @property
    def ok(self) -> bool:
        return self.failures == 0 and set(self.versions) <= set(VERSIONS) and sum(self.versions.values()) > 0

    def report_line(self) -> str:
        total = sum(self.versions.values()) + self.failures
        return (
            f"gRPC client -> order-service's sidecar -> {SERVICE} (HTTP/2 over mTLS), {total} calls: "
            f"{json.dumps(dict(self.versions))}, failures {self.failures}, callers seen {sorted(self.callers)}"
        )


async def call_ratings(order: Workload, calls: int) -> RatingsReport:
    versions: Counter[str] = Counter()
    callers: set[str] = set()
    failures = 0
    options = [("grpc.default_authority", SERVICE)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{order.outbound_port}", options=options) as channel:
        get = channel.unary_unary(GET)
        for i in range(calls):
            try:
                answer = json.loads(await get(f"product-{i}".encode(), timeout=5))
            except grpc.aio.AioRpcError:
                failures += 1
                continue
            versions[answer["version"]] += 1
            callers.add(str(answer["caller"]))
    return RatingsReport(versions, frozenset(callers), failures)


def run_ratings_calls(order: Workload, calls: int = 20) -> RatingsReport:
    """Waits until order-service's sidecar has both subsets with a healthy endpoint, then calls them."""

    async def ready_then_call() -> RatingsReport:
        await wait_for_clusters(order, CLUSTERS)
        return await call_ratings(order, calls)

    return asyncio.run(ready_then_call())
