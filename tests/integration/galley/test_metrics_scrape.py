"""Galley's /metrics, scraped from a real galley API backed by the real nats-server."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.galley.test_api import DR, apply, call, vs

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

BROKEN_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: shop}
spec:
  hosts: [product]
  colour: blue
"""
UNKNOWN_KIND = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: gw, namespace: shop}
spec: {}
"""


async def scrape(galley_url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(f"{galley_url}/metrics") as reply:
        assert reply.status == 200
        assert reply.content_type == "text/plain"
        text = await reply.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_applies_validation_and_stored_config_are_scraped(galley_url: str) -> None:
    before = await scrape(galley_url)
    assert value(before, "galley_config_resources", kind="VirtualService") == 0

    assert (await apply(galley_url, ("vs.yaml", vs()), ("dr.yaml", DR)))[0] == 200
    assert (await apply(galley_url, ("vs.yaml", vs(80))))[0] == 200
    assert (await apply(galley_url, ("vs.yaml", vs(70)), dry_run=True))[0] == 200
    assert (await apply(galley_url, ("broken.yaml", BROKEN_VS), ("gw.yaml", UNKNOWN_KIND)))[0] == 400
    assert (await apply(galley_url, ("bad.yaml", "a: [unclosed")))[0] == 400
    assert (await call("DELETE", f"{galley_url}/v1/resources/dr/shop/product"))[0] == 200

    samples = await scrape(galley_url)
    assert value(samples, "galley_applies_total", outcome="applied") == 2
    assert value(samples, "galley_applies_total", outcome="dry_run") == 1
    assert value(samples, "galley_applies_total", outcome="invalid") == 2
    assert value(samples, "galley_resources_applied_total", kind="VirtualService", action="created") == 1
    assert value(samples, "galley_resources_applied_total", kind="VirtualService", action="configured") == 1
    assert value(samples, "galley_resources_applied_total", kind="DestinationRule", action="created") == 1
    assert value(samples, "galley_validation_passed_total", kind="VirtualService") == 3
    assert value(samples, "galley_validation_failed_total", kind="VirtualService", reason="extra_forbidden") == 1
    assert value(samples, "galley_validation_failed_total", kind="unknown", reason="unknown_kind") == 1
    assert value(samples, "galley_validation_failed_total", kind="unknown", reason="parse") == 1
    assert value(samples, "galley_deletes_total", kind="DestinationRule") == 1
    assert value(samples, "galley_apply_duration_seconds_count") == 5

    # Stored config, read from the bucket at scrape time: one VirtualService left, four revisions written
    # (VS create, DR create, VS update, DR delete marker).
    assert value(samples, "galley_config_resources", kind="VirtualService") == 1
    assert value(samples, "galley_config_resources", kind="DestinationRule") == 0
    assert value(samples, "galley_config_revision") == 4
    assert value(samples, "galley_config_history_revisions") == 4
    assert value(samples, "galley_metrics_store_errors_total") == 0
