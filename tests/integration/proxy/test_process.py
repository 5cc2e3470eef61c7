"""`python -m services.proxy` as a process beside a real citadel: token -> cert, config -> ready, SIGTERM -> gone.

The sidecar maps neither grpc nor cryptography: both stay in its short-lived enrollment child."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from nats.js.errors import KeyNotFoundError

from services.citadel.ca import CertificateAuthority
from services.citadel.tokens import create_token
from services.local.processes import free_port
from services.proxy.kv import ensure_bucket
from shared.bus.codec import Ack
from shared.bus.names import PROXY_CONFIG_BUCKET, PROXY_STATUS_BUCKET, proxy_key
from shared.clock import SYSTEM_CLOCK
from shared.consul import proxy_id_for
from shared.model.proxy_config import ProxyConfig

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CITADEL_READY = re.compile(rb"citadel ready on (\S+)")


async def spawn(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *argv, cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )


async def wait_for_line(process: asyncio.subprocess.Process, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
    assert process.stderr is not None
    seen = b""
    async with asyncio.timeout(20):
        while True:
            line = await process.stderr.readline()
            assert line, f"process exited early:\n{seen.decode()}"
            seen += line
            if match := pattern.search(line):
                return match


async def _ack_of(status: Any, key: str) -> Ack:
    """The proxy's ack, polled: the status write may land just after the log line that says ready."""
    async with asyncio.timeout(10):
        while True:
            try:
                return Ack.from_json((await status.get(key)).value or b"")
            except KeyNotFoundError:
                await asyncio.sleep(0.05)


async def stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        return await process.wait()


async def test_proxy_process_bootstraps_from_citadel_and_stops_cleanly(
    tmp_path: Path, private_nats_url: str, consul_addr: str, make_app: Any
) -> None:
    citadel_state = tmp_path / "citadel"
    citadel = await spawn(
        "-m",
        "services.citadel",
        "--state-dir",
        str(citadel_state),
        "--listen",
        "127.0.0.1:0",
        "--nats-url",
        private_nats_url,
    )
    proxy: asyncio.subprocess.Process | None = None
    try:
        citadel_addr = (await wait_for_line(citadel, CITADEL_READY)).group(1).decode()
        token = create_token(CertificateAuthority.load(citadel_state), "default", "reviews", 600, SYSTEM_CLOCK)
        token_file = tmp_path / "token"
        token_file.write_text(token)
        app = await make_app("reviews")
        inbound, health, admin = free_port(), free_port(), free_port()
        proxy = await spawn(
            "-m",
            "services.proxy",
            "--service",
            "reviews",
            "--app-port",
            str(app.port),
            "--inbound-port",
            str(inbound),
            "--outbound-port",
            str(free_port()),
            "--admin-port",
            str(admin),
            "--health-port",
            str(health),
            "--nats-url",
            private_nats_url,
            "--consul-addr",
            consul_addr,
            "--citadel-addr",
            citadel_addr,
            "--token-file",
            str(token_file),
            "--state-dir",
            str(tmp_path / "proxy"),
        )
        proxy_id = proxy_id_for("reviews", "default", inbound, socket.gethostname())
        await wait_for_line(proxy, re.compile(rb"listening"))

        config = ProxyConfig(proxy_id=proxy_id, service="reviews", namespace="default").versioned()
        bus = await nats.connect(private_nats_url)
        try:
            configs = await ensure_bucket(bus.jetstream(), PROXY_CONFIG_BUCKET)
            await configs.put(proxy_key(proxy_id), config.to_json())
            await wait_for_line(proxy, re.compile(rb"proxy \S+ ready"))
            status = await ensure_bucket(bus.jetstream(), PROXY_STATUS_BUCKET)
            ack = await _ack_of(status, proxy_key(proxy_id))
            assert ack.accepted and ack.version == config.version
        finally:
            await bus.close()

        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{health}/healthz/ready") as reply:
                assert reply.status == 200
            async with session.get(f"http://127.0.0.1:{admin}/config_dump") as reply:
                dump = await reply.json()
            async with session.get(f"http://{consul_addr}/v1/agent/service/{proxy_id}") as reply:
                assert reply.status == 200
        assert dump["certificate"]["spiffeId"] == "spiffe://cluster.local/ns/default/sa/reviews"
        mapped = await asyncio.to_thread(Path(f"/proc/{proxy.pid}/maps").read_text)
        assert "cygrpc" not in mapped, "the certificate call runs in a child process; grpc stays out of the sidecar"
        assert "_rust.abi3.so" not in mapped, "X.509 work runs in the enrollment child; cryptography stays out"

        assert await stop(proxy) == 0
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{consul_addr}/v1/agent/service/{proxy_id}") as reply:
                assert reply.status == 404
    finally:
        if proxy is not None:
            await stop(proxy)
        await stop(citadel)
