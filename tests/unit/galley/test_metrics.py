"""Galley metrics: validation failures by kind and reason, and a store outage that leaves the scrape working."""

from __future__ import annotations

from typing import Any, cast

from services.galley.metrics import GalleyMetrics
from services.galley.sources import Source
from services.galley.store import ConfigStore
from services.galley.validate import validate_sources

VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: shop}
spec: {hosts: [a]}
"""


def test_failures_carry_kind_and_reason() -> None:
    duplicate = validate_sources([Source("one.yaml", VS), Source("two.yaml", VS)])
    assert duplicate.failures == (("unknown", "duplicate"),)
    assert validate_sources([Source("empty.yaml", "")]).failures == (("unknown", "empty"),)
    missing = validate_sources([Source("vs.yaml", VS.replace("spec: {hosts: [a]}", "spec: {http: []}"))])
    assert missing.failures == (("VirtualService", "missing"),)
    metrics = GalleyMetrics()
    metrics.validated(duplicate)
    assert (
        metrics.registry.get_sample_value("galley_validation_failed_total", {"kind": "unknown", "reason": "duplicate"})
        == 1
    )
    assert metrics.registry.get_sample_value("galley_validation_passed_total", {"kind": "VirtualService"}) == 2


class DownStore:
    async def list(self) -> list[Any]:
        raise TimeoutError("nats down")


async def test_an_unreadable_store_is_counted_not_raised() -> None:
    metrics = GalleyMetrics()
    await metrics.refresh(cast(ConfigStore, DownStore()))
    assert metrics.registry.get_sample_value("galley_metrics_store_errors_total") == 1
    assert metrics.registry.get_sample_value("galley_config_resources", {"kind": "VirtualService"}) == 0
