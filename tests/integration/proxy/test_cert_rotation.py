"""Short-lived certificates from a real citadel rotate under a steady request stream without a single error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from services.citadel.ca import CertificateAuthority, TtlPolicy
from services.citadel.server import CitadelServer
from services.citadel.tokens import create_token
from services.proxy.citadel_source import CitadelEnroller
from services.proxy.sidecar import Sidecar
from shared.clock import SYSTEM_CLOCK
from tests.integration.proxy.citadel_mesh import RequestStream, mesh_configs, sidecar_settings
from tests.integration.proxy.conftest import TRUST_DOMAIN, ProxyBus

pytestmark = pytest.mark.integration

TTL_SECONDS = 4
ROTATIONS = 3
DEADLINE = 90.0
ACK_WITHIN = 60.0
"""Generous: a loaded machine may take a while to deliver a config and its ACK."""


@pytest.fixture
async def citadel(tmp_path: Path) -> AsyncIterator[tuple[CertificateAuthority, str]]:
    ca = CertificateAuthority.load_or_create(
        tmp_path / "citadel", TRUST_DOMAIN, ttl=TtlPolicy(default_seconds=TTL_SECONDS, max_seconds=TTL_SECONDS)
    )
    server = CitadelServer(ca)
    port = await server.start("127.0.0.1:0")
    yield ca, f"127.0.0.1:{port}"
    await server.stop(0)


@pytest.fixture
async def citadel_sidecar(
    tmp_path: Path, nats_client: NatsClient, citadel: tuple[CertificateAuthority, str]
) -> AsyncIterator[Callable[[str, int], Awaitable[Sidecar]]]:
    ca, address = citadel
    started: list[Sidecar] = []

    async def make(service: str, app_port: int) -> Sidecar:
        settings = sidecar_settings(tmp_path / f"proxy-{service}", service, app_port)
        token = create_token(ca, "default", service, 600, SYSTEM_CLOCK)
        enroller = CitadelEnroller(address, ca.trust_bundle_pem, token, SYSTEM_CLOCK)
        sidecar = Sidecar(settings, enroller, nats=nats_client, bus_trust_bundle=False)
        await sidecar.start()
        started.append(sidecar)
        return sidecar

    yield make
    for sidecar in started:
        await sidecar.stop()


async def test_rotation_under_load_loses_no_request(make_app: Any, citadel_sidecar: Any, bus: ProxyBus) -> None:
    app = await make_app("reviews")
    server = await citadel_sidecar("reviews", app.port)
    caller = await citadel_sidecar("productpage", 1)
    for config in mesh_configs(caller, server):
        await bus.push(config)
        await bus.ack(config.proxy_id, config.version, within=ACK_WITHIN)

    stream = RequestStream(caller)
    stream.start()
    deadline = time.monotonic() + DEADLINE
    try:
        while min(server.certs.renewals, caller.certs.renewals) < ROTATIONS:
            assert time.monotonic() < deadline, (server.certs.renewals, caller.certs.renewals, stream.failures[:3])
            stream.check_running()
            await asyncio.sleep(0.1)
    finally:
        await stream.stop()
    assert stream.failures == []
    assert len(stream.statuses) > 2 * ROTATIONS
    assert app.seen[-1]["headers"]["x-forwarded-client-cert"].endswith(f"URI={caller.settings.spiffe_id}")
