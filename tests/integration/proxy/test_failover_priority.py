"""failoverPriority through a real sidecar: endpoints sharing the caller's labels first, the next priority once
outlier detection ejects them."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from services.proxy.sidecar import Sidecar
from shared.model.proxy_config import ProxyConfig
from tests.integration.proxy.catalog_config import apply
from tests.integration.proxy.test_locality import OUTLIER, answered_by, catalog_config

pytestmark = pytest.mark.integration

PRIORITY = {"loadBalancer": {"localityLbSetting": {"failoverPriority": ["version", "topology.kubernetes.io/region"]}}}


def labelled_config(sidecar: Sidecar, endpoints: dict[int, dict[str, str]]) -> ProxyConfig:
    """`catalog` on loopback ports with the given labels, outlier detection and failoverPriority."""
    return catalog_config(sidecar, endpoints, {**OUTLIER, **PRIORITY})


async def test_traffic_stays_on_the_callers_version_and_region_then_its_version(
    make_app: Any, make_sidecar: Any, bus: Any
) -> None:
    same = await make_app("same")
    same_version = await make_app("same-version")
    same_zone = await make_app("same-zone")
    sidecar = await make_sidecar("web", 1, locality="us-east/zone-a")
    assert sidecar.labels["version"] == "v1"
    endpoints = {
        same.port: {"version": "v1", "locality": "us-east/zone-b"},
        same_version.port: {"version": "v1", "locality": "eu-west/zone-a"},
        same_zone.port: {"version": "v2", "locality": "us-east/zone-a"},
    }
    await apply(bus, labelled_config(sidecar, endpoints))

    assert await answered_by(sidecar, 30) == Counter({"200 same": 30})

    same.fail_with = 503
    assert await answered_by(sidecar, 2) == Counter({"503 same": 2})  # two 5xx in a row eject it
    assert await answered_by(sidecar, 30) == Counter({"200 same-version": 30}), "the version before the region"
    assert same_zone.seen == [], "the caller's own zone, on another version, is the last priority"
