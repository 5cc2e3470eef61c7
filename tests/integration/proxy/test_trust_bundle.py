"""Roots from the bus: a sidecar trusts the KV trust bundle, follows its rotation, and keeps a copy for restarts."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient

from services.proxy.kv import ensure_bucket
from services.proxy.sidecar import TRUST_BUNDLE_FILE, Sidecar
from services.proxy.tls import WorkloadIdentity, client_context
from shared.bus.names import TRUST_BUNDLE_BUCKET, TRUST_BUNDLE_KEY
from shared.identity.svid import build_csr, new_private_key, private_key_pem
from tests.integration.sidecar_settings import loopback_settings

pytestmark = pytest.mark.integration

CALLER = "spiffe://cluster.local/ns/default/sa/caller"


@pytest.fixture
async def private_bus(private_nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(private_nats_url)
    yield client
    await client.close()


async def publish_bundle(client: NatsClient, bundle: bytes) -> None:
    bucket = await ensure_bucket(client.jetstream(), TRUST_BUNDLE_BUCKET)
    await bucket.put(TRUST_BUNDLE_KEY, bundle)


def identity_from(ca: Any, spiffe_id: str) -> WorkloadIdentity:
    key = new_private_key()
    issued = ca.sign(build_csr(key, spiffe_id))
    # The client trusts every root involved: only the server's view of trust is under test.
    return WorkloadIdentity(spiffe_id, private_key_pem(key), issued.chain_pem, ca.bundle_pem, issued.not_after)


async def accepted(port: int, identity: WorkloadIdentity, server_roots: bytes) -> bool:
    """Whether the inbound listener lets a client presenting `identity` send a request (TLS 1.3 checks late)."""
    context = client_context(identity.with_trust_bundle(server_roots))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    except (ssl.SSLError, OSError):
        return False
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return bool(await reader.read(1))
    except (ssl.SSLError, OSError):
        return False
    finally:
        writer.close()


async def test_bus_bundle_is_trusted_and_rotation_is_followed(
    private_bus: NatsClient, test_ca: Any, new_ca: Any, ca_enroller: Any, make_app: Any, tmp_path: Path
) -> None:
    other = new_ca("next root")
    await publish_bundle(private_bus, test_ca.bundle_pem)
    app = await make_app("reviews")
    settings = replace(loopback_settings("reviews", app.port, tmp_path / "reviews"), host="bundle-node")
    sidecar = Sidecar(settings, ca_enroller(test_ca), nats=private_bus)
    await sidecar.start()
    try:
        port = sidecar.listeners["inbound"].port
        assert sidecar.tls.identity is not None
        assert sidecar.tls.identity.trust_bundle_pem == test_ca.bundle_pem
        newcomer = identity_from(other, CALLER)
        assert not await accepted(port, newcomer, test_ca.bundle_pem)

        rotated = test_ca.bundle_pem + other.bundle_pem
        await publish_bundle(private_bus, rotated)
        deadline = time.monotonic() + 10
        while sidecar.tls.identity.trust_bundle_pem != rotated:
            assert time.monotonic() < deadline, "sidecar never picked up the rotated bundle"
            await asyncio.sleep(0.02)
        assert await accepted(port, newcomer, test_ca.bundle_pem)
        assert await accepted(port, identity_from(test_ca, CALLER), test_ca.bundle_pem)
        assert (settings.state_dir / TRUST_BUNDLE_FILE).read_bytes() == rotated
    finally:
        await sidecar.stop()
