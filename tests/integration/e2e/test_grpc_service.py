"""A gRPC service through the real mesh: two ratings apps behind sidecars declared `--protocol grpc`, registered
in Consul, routed 50/50 by pilot from a VirtualService applied to galley, and called by a gRPC client through
order-service's sidecar over HTTP/2 inside mTLS."""

from __future__ import annotations

import pytest

from services.local import ratings
from services.local.demo import wait_for_clusters
from services.local.mesh import LocalMesh, Workload

pytestmark = pytest.mark.integration


async def test_grpc_calls_are_split_by_the_virtual_service_and_carry_the_callers_identity(
    mesh: LocalMesh, order: Workload
) -> None:
    ratings.start_ratings(mesh)
    mesh.apply_text("ratings.yaml", ratings.ratings_config())
    await wait_for_clusters(order, ratings.CLUSTERS)
    report = await ratings.call_ratings(order, calls=40)
    assert report.failures == 0, report.report_line()
    assert set(report.versions) == {"v1", "v2"}, report.report_line()  # 50/50: both in 40 calls (1 in 2^39 not)
    assert report.callers == {"spiffe://cluster.local/ns/shop/sa/order-service"}
