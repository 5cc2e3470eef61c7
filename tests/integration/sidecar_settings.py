"""In-process test sidecars: settings with every listener on a free loopback port, and their metric samples."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from services.local.processes import free_port
from services.proxy.sidecar import Sidecar, SidecarSettings


def loopback_settings(
    service: str, app_port: int, state_dir: Path, host: str = "test", **extra: Any
) -> SidecarSettings:
    """`host` is a prefix: a timestamp makes each sidecar's proxy id (and Consul service id) unique."""
    return SidecarSettings(
        service=service,
        app_port=app_port,
        inbound_port=free_port(),
        outbound_port=free_port(),
        admin_port=free_port(),
        health_port=free_port(),
        state_dir=state_dir,
        host=f"{host}{time.monotonic_ns()}",
        **extra,
    )


def metric(sidecar: Sidecar, name: str, **labels: str) -> float:
    """The sum of the sidecar's samples called `name` whose labels include `labels`."""
    metrics = sidecar.telemetry.metrics
    assert metrics is not None
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )
