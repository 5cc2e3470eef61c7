"""A plug-in CA replaced under a running mesh: a real citadel, two real sidecars following the trust bundle over
real NATS, certificates living seconds, and a steady request stream that must not see one failure."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography import x509
from nats.aio.client import Client as NatsClient

from services.citadel.bundle import keep_bundle_published, read_trust_bundle
from services.citadel.ca import CertificateAuthority, TtlPolicy
from services.citadel.reload import CaReloader, CurrentCa
from services.citadel.server import CitadelServer
from services.citadel.testing import PluginCa, new_plugin_ca, pem, write_plugin_ca
from services.citadel.tokens import create_token
from services.proxy.main import _build as build_sidecar
from services.proxy.sidecar import Sidecar
from shared.clock import SYSTEM_CLOCK
from tests.integration.proxy.citadel_mesh import RequestStream, mesh_configs, sidecar_settings
from tests.integration.proxy.conftest import ProxyBus

pytestmark = pytest.mark.integration

TTL_SECONDS = 4
HANDOVER_GRACE = 1.0
RENEWALS_AFTER_SWAP = 2
DEADLINE = 90.0
ACK_WITHIN = 60.0


@dataclass
class PluggedCitadel:
    state: Path
    first: PluginCa
    current: CurrentCa
    reloader: CaReloader
    address: str


@pytest.fixture
async def private_bus(private_nats_url: str) -> AsyncIterator[NatsClient]:
    """This module's own NATS: the test publishes the mesh-wide trust bundle key."""
    client = await nats.connect(private_nats_url)
    yield client
    await client.close()


@pytest.fixture
async def citadel(tmp_path: Path, private_nats_url: str) -> AsyncIterator[PluggedCitadel]:
    state = tmp_path / "citadel"
    first = new_plugin_ca("first")
    write_plugin_ca(state, first)
    ttl = TtlPolicy(default_seconds=TTL_SECONDS, max_seconds=TTL_SECONDS)
    current = CurrentCa(CertificateAuthority.load(state, ttl=ttl), grace_seconds=HANDOVER_GRACE)
    server = CitadelServer(current)
    port = await server.start("127.0.0.1:0")
    reloader = CaReloader(state, current, server.metrics, SYSTEM_CLOCK, interval=3600.0)
    publisher = asyncio.create_task(
        keep_bundle_published(
            private_nats_url, current.trust_bundle_pem, SYSTEM_CLOCK, current.changed, published=current.published
        )
    )
    yield PluggedCitadel(state, first, current, reloader, f"127.0.0.1:{port}")
    publisher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await publisher
    await server.stop(0)


async def eventually(check: Any, what: str, stream: RequestStream | None = None) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        if stream is not None:
            stream.check_running()
        await asyncio.sleep(0.05)


def issuer(sidecar: Sidecar) -> x509.Name:
    assert sidecar.tls.identity is not None
    return x509.load_pem_x509_certificate(sidecar.tls.identity.chain_pem[0]).issuer


async def test_plugin_ca_swap_under_load_loses_no_request(
    tmp_path: Path, make_app: Any, citadel: PluggedCitadel, private_bus: NatsClient
) -> None:
    async def published(wanted: bytes) -> bool:
        return await read_trust_bundle(private_bus.jetstream()) == wanted

    await eventually(lambda: published(pem(citadel.first.root)), "the first CA's bundle in NATS")
    app = await make_app("reviews")
    started: list[Sidecar] = []

    async def sidecar(service: str, app_port: int) -> Sidecar:
        token = create_token(citadel.current.ca, "default", service, 600, SYSTEM_CLOCK)
        args = argparse.Namespace(citadel_addr=citadel.address, consul_addr=None)
        built = build_sidecar(
            sidecar_settings(tmp_path / f"proxy-{service}", service, app_port), args, token, private_bus
        )
        await built.start()
        started.append(built)
        return built

    bus = ProxyBus(private_bus)
    stream: RequestStream | None = None
    try:
        server = await sidecar("reviews", app.port)
        caller = await sidecar("productpage", 1)
        for config in mesh_configs(caller, server):
            await bus.push(config)
            await bus.ack(config.proxy_id, config.version, within=ACK_WITHIN)
        stream = RequestStream(caller)
        stream.start()

        async def renewed(counts: tuple[int, int]) -> bool:
            return server.certs.renewals > counts[0] and caller.certs.renewals > counts[1]

        await eventually(lambda: renewed((0, 0)), "a renewal under the first CA", stream)
        second = new_plugin_ca("second")
        write_plugin_ca(citadel.state, second)
        assert citadel.reloader.reload()  # what SIGHUP does
        assert citadel.current.ca.root_cert == citadel.first.intermediate  # announced first, signs later
        announced = pem(citadel.first.root, second.root)
        await eventually(lambda: published(announced), "the new root announced after the first", stream)

        async def on_second_ca() -> bool:
            return all(issuer(s) == second.intermediate.subject for s in (server, caller))

        await eventually(on_second_ca, "both sidecars to hold certificates from the second CA", stream)
        for _ in range(RENEWALS_AFTER_SWAP):
            await eventually(lambda c=(server.certs.renewals, caller.certs.renewals): renewed(c), "renewals", stream)
        assert all(issuer(s) == second.intermediate.subject for s in (server, caller))
        assert await published(pem(second.root, citadel.first.root))  # new signing root first, old kept
        for s in (server, caller):
            assert s.tls.identity is not None and pem(second.root) in s.tls.identity.trust_bundle_pem
    finally:
        if stream is not None:
            await stream.stop()
        for built_sidecar in started:
            await built_sidecar.stop()
    assert stream.failures == []
    assert len(stream.statuses) > 100
    print(f"requests: {len(stream.statuses)}, failed: {len(stream.failures)}")
