"""Token revocation over real NATS and gRPC: `isthmus token revoke` -> KV -> citadel refuses; metrics count it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient

from services.citadel.ca import CertificateAuthority
from services.citadel.client import CertificateRefused, CitadelClient
from services.citadel.metrics import start_metrics_server
from services.citadel.revocation import RevocationList, revocation_bucket
from services.citadel.server import CitadelServer
from services.citadel.tokens import create_token, unverified_claims
from services.cli.token_cmds import revoke_command
from shared.clock import SYSTEM_CLOCK
from shared.identity import SpiffeId
from shared.identity.svid import build_csr, new_private_key

pytestmark = pytest.mark.integration

WEB = SpiffeId("cluster.local", "shop", "web")


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


async def test_revoked_token_is_refused_and_counted(tmp_path: Path, nats_url: str, nc: NatsClient) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "citadel", "cluster.local")
    revocations = RevocationList()
    following = asyncio.create_task(revocations.follow(nc.jetstream()))
    server = CitadelServer(ca, revoked=revocations.revoked)
    port = await server.start("127.0.0.1:0")
    runner, metrics_port = await start_metrics_server(server.metrics, "127.0.0.1", 0)
    client = CitadelClient(f"127.0.0.1:{port}", ca.trust_bundle_pem())
    try:
        await asyncio.wait_for(revocations.ready.wait(), 20)
        token = create_token(ca, "shop", "web", 600, SYSTEM_CLOCK)
        kept = create_token(ca, "shop", "web", 600, SYSTEM_CLOCK)
        issued = await client.create_certificate(build_csr(new_private_key(), WEB.uri), token=token)
        assert issued.leaf_pem

        args = argparse.Namespace(nats_url=nats_url, jti=None, token=token, token_file=None)
        assert await asyncio.to_thread(revoke_command, args) == 0
        jti = unverified_claims(token)["jti"]
        entry = await (await revocation_bucket(nc.jetstream())).get(jti)
        assert entry.value is not None and float(entry.value) > time.time()

        deadline = time.monotonic() + 20
        while not revocations.revoked(jti):
            assert time.monotonic() < deadline, "citadel never saw the revocation"
            await asyncio.sleep(0.05)
        with pytest.raises(CertificateRefused, match="token revoked"):
            await client.create_certificate(build_csr(new_private_key(), WEB.uri), token=token)
        assert (await client.create_certificate(build_csr(new_private_key(), WEB.uri), token=kept)).leaf_pem

        url = f"http://127.0.0.1:{metrics_port}/metrics"
        text = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())).decode()
        assert 'citadel_csr_signed_total{auth="token"} 2.0' in text
        assert 'citadel_csr_refused_total{reason="token_revoked"} 1.0' in text
        assert "citadel_root_cert_expiry_timestamp_seconds" in text
    finally:
        await client.close()
        await runner.cleanup()
        await server.stop(0)
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following


def test_revoke_names_an_unreachable_bus(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(nats_url="nats://127.0.0.1:1", jti="abc", token=None, token_file=None)
    assert revoke_command(args) == 1
    assert "cannot reach NATS" in capsys.readouterr().err
