"""`python -m services.citadel` as a real process: announces readiness, publishes the bundle, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import nats
import pytest

from services.citadel.bundle import read_trust_bundle
from services.citadel.ca import CertificateAuthority
from services.citadel.ca_store import CERT_FILE, KEY_FILE
from services.citadel.client import CitadelClient
from services.citadel.tokens import create_token
from shared.clock import SYSTEM_CLOCK
from shared.identity.svid import build_csr, new_private_key

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
READY = re.compile(rb"citadel ready on (\S+)")


async def start_citadel(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.citadel",
        *argv,
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def wait_ready(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    seen = b""
    async with asyncio.timeout(20):
        while True:
            line = await process.stderr.readline()
            assert line, f"citadel exited before it was ready:\n{seen.decode()}"
            seen += line
            if match := READY.search(line):
                return match.group(1).decode()


async def test_citadel_serves_publishes_and_stops_cleanly(tmp_path: Path, nats_url: str) -> None:
    state = tmp_path / "citadel"
    process = await start_citadel(
        "--state-dir",
        str(state),
        "--listen",
        "127.0.0.1:0",
        "--nats-url",
        nats_url,
        "--default-ttl",
        "1h",
        "--max-ttl",
        "2h",
    )
    try:
        address = await wait_ready(process)
        ca = CertificateAuthority.load(state)
        assert (state / KEY_FILE).exists()
        client = CitadelClient(address, (state / CERT_FILE).read_bytes())
        try:
            csr = build_csr(new_private_key(), "spiffe://cluster.local/ns/shop/sa/web")
            issued = await client.create_certificate(csr, token=create_token(ca, "shop", "web", 60, SYSTEM_CLOCK))
        finally:
            await client.close()
        assert 3500 < issued.not_after - SYSTEM_CLOCK.wall() <= 3600
        connection = await nats.connect(nats_url)
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while await read_trust_bundle(connection.jetstream()) != ca.trust_bundle_pem():
                assert asyncio.get_running_loop().time() < deadline, "citadel never published its bundle"
                await asyncio.sleep(0.05)
        finally:
            await connection.close()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            returncode = await process.wait()
    assert returncode == 0


async def test_citadel_refuses_to_start_with_a_readable_ca_key(tmp_path: Path) -> None:
    CertificateAuthority.load_or_create(tmp_path, "cluster.local")
    (tmp_path / KEY_FILE).chmod(0o644)
    process = await start_citadel("--state-dir", str(tmp_path), "--listen", "127.0.0.1:0")
    async with asyncio.timeout(20):
        _, stderr = await process.communicate()
    assert process.returncode == 1
    assert b"must be private" in stderr
