"""A running citadel (real gRPC over TLS, real NATS) picks up replaced plug-in CA files without a restart: the new
root is published first, the new CA signs after the handover grace, and the operator can retire the old one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from cryptography import x509

from services.citadel.bundle import keep_bundle_published, read_trust_bundle
from services.citadel.ca import CertificateAuthority
from services.citadel.client import CertificateRefused, CitadelClient
from services.citadel.reload import RETIRE_MARKER, CaReloader, CurrentCa
from services.citadel.server import CitadelServer
from services.citadel.testing import PluginCa, new_plugin_ca, pem, write_plugin_ca
from services.citadel.tokens import create_token
from shared.clock import SYSTEM_CLOCK, FakeClock
from shared.identity import SpiffeId
from shared.identity.svid import build_csr, new_private_key, private_key_pem

pytestmark = pytest.mark.integration

WEB = SpiffeId("cluster.local", "shop", "web")
INTERVAL = 5.0
GRACE = 30.0
WITHIN = 10.0


@dataclass
class Running:
    state: Path
    first: PluginCa
    current: CurrentCa
    server: CitadelServer
    address: str
    watch_clock: FakeClock

    def count(self, result: str) -> float:
        return self.server.metrics.registry.get_sample_value("citadel_ca_reloads_total", {"result": result}) or 0.0

    async def tick_twice(self) -> None:
        """Two watch intervals: a change is seen, then applied once it held."""
        await self.watch_clock.advance(INTERVAL)
        await self.watch_clock.advance(INTERVAL)


@pytest.fixture
async def citadel(tmp_path: Path, nats_url: str) -> AsyncIterator[Running]:
    state = tmp_path / "citadel"
    first = new_plugin_ca("first")
    write_plugin_ca(state, first)
    watch_clock = FakeClock()
    current = CurrentCa(CertificateAuthority.load(state), clock=watch_clock, grace_seconds=GRACE)
    server = CitadelServer(current)
    port = await server.start("127.0.0.1:0")
    reloader = CaReloader(state, current, server.metrics, watch_clock, interval=INTERVAL)
    tasks = [
        asyncio.create_task(reloader.run()),
        asyncio.create_task(
            keep_bundle_published(
                nats_url, current.trust_bundle_pem, FakeClock(), current.changed, published=current.published
            )
        ),
    ]
    await asyncio.sleep(0)
    yield Running(state, first, current, server, f"127.0.0.1:{port}", watch_clock)
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await server.stop(0)


async def published_bundle(nats_url: str, wanted: bytes) -> bytes | None:
    """Poll KV until it holds `wanted` (or the deadline passes); the last value read."""
    connection = await nats.connect(nats_url)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WITHIN
        seen = await read_trust_bundle(connection.jetstream())
        while seen != wanted and loop.time() < deadline:
            await asyncio.sleep(0.05)
            seen = await read_trust_bundle(connection.jetstream())
        return seen
    finally:
        await connection.close()


def issuer_of(leaf_pem: bytes) -> x509.Name:
    return x509.load_pem_x509_certificate(leaf_pem).issuer


async def test_replaced_files_are_validated_then_served_without_restart(citadel: Running, nats_url: str) -> None:
    first_bundle = pem(citadel.first.root)
    assert await published_bundle(nats_url, first_bundle) == first_bundle
    token = create_token(citadel.current.ca, WEB.namespace, WEB.service_account, 3600, SYSTEM_CLOCK)
    old_client = CitadelClient(citadel.address, first_bundle)  # a workload that knows only the first root
    key = new_private_key()
    issued = await old_client.create_certificate(build_csr(key, WEB.uri), token=token)
    assert issuer_of(issued.leaf_pem) == citadel.first.intermediate.subject

    # A broken set (new certificate, old key): refused, counted, the first CA keeps signing.
    second = new_plugin_ca("second")
    write_plugin_ca(citadel.state, PluginCa(second.root, second.root_key, second.intermediate, key))
    await citadel.tick_twice()
    assert citadel.count("invalid") == 1 and citadel.count("applied") == 0
    next_key = new_private_key()
    renewed = await old_client.create_certificate(
        build_csr(next_key, WEB.uri), client_chain_pem=issued.leaf_pem, client_key_pem=private_key_pem(key)
    )
    assert issuer_of(renewed.leaf_pem) == citadel.first.intermediate.subject
    assert await published_bundle(nats_url, first_bundle) == first_bundle

    # A valid set: applied and announced (its root published after the first) while the first CA still signs.
    write_plugin_ca(citadel.state, second)
    await citadel.tick_twice()
    assert citadel.count("applied") == 1
    announced = pem(citadel.first.root, second.root)
    assert await published_bundle(nats_url, announced) == announced
    during = await old_client.create_certificate(build_csr(new_private_key(), WEB.uri), token=token)
    assert issuer_of(during.leaf_pem) == citadel.first.intermediate.subject

    # After the grace the second CA signs; a renewal with the first CA's certificate moves to it.
    await citadel.watch_clock.advance(GRACE)
    overlap = pem(second.root, citadel.first.root)
    assert await published_bundle(nats_url, overlap) == overlap
    rotated_client = CitadelClient(citadel.address, overlap)
    moved_key = new_private_key()
    moved = await rotated_client.create_certificate(
        build_csr(moved_key, WEB.uri), client_chain_pem=renewed.leaf_pem, client_key_pem=private_key_pem(next_key)
    )
    assert issuer_of(moved.leaf_pem) == second.intermediate.subject
    assert moved.trust_bundle_pem == overlap
    # Bootstrap tokens signed by the first CA still work during the overlap.
    by_token = await rotated_client.create_certificate(build_csr(new_private_key(), WEB.uri), token=token)
    assert issuer_of(by_token.leaf_pem) == second.intermediate.subject

    # Citadel's own serving certificate now comes from the second CA: a client trusting only it connects.
    new_only = CitadelClient(citadel.address, pem(second.root))
    renewed_again = await new_only.create_certificate(
        build_csr(new_private_key(), WEB.uri),
        client_chain_pem=moved.leaf_pem,
        client_key_pem=private_key_pem(moved_key),
    )
    assert issuer_of(renewed_again.leaf_pem) == second.intermediate.subject

    # The operator retires the first CA at once: its root leaves the bundle, its certificates stop renewing.
    (citadel.state / RETIRE_MARKER).touch()
    await citadel.watch_clock.advance(INTERVAL)
    assert await published_bundle(nats_url, pem(second.root)) == pem(second.root)
    with pytest.raises(CertificateRefused):
        await new_only.create_certificate(
            build_csr(new_private_key(), WEB.uri),
            client_chain_pem=renewed.leaf_pem,
            client_key_pem=private_key_pem(next_key),
        )
    for client in (old_client, rotated_client, new_only):
        await client.close()
