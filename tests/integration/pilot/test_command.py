"""`python -m services.pilot` as a process: ready against real NATS and Consul, clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import aiohttp
import pytest

from services.local.processes import free_port

pytestmark = pytest.mark.integration

DEADLINE = 20.0


async def read_until(stream: asyncio.StreamReader, marker: str, seen: list[str]) -> None:
    while True:
        line = (await stream.readline()).decode(errors="replace")
        if not line:
            raise AssertionError("pilot exited before logging " + repr(marker) + ":\n" + "".join(seen))
        seen.append(line)
        if marker in line:
            return


async def test_pilot_command_gets_ready_and_stops_cleanly(nats_url: str, consul_addr: str) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.pilot",
        "--nats-url", nats_url, "--consul-addr", consul_addr, "--listen", f"127.0.0.1:{port}",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    seen: list[str] = []
    try:
        await asyncio.wait_for(read_until(process.stderr, "pilot ready", seen), DEADLINE)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as reply:
                assert reply.status == 200
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.wait_for(process.wait(), DEADLINE)
        assert code == 0, "".join(seen)
        assert time.monotonic() - started < 5.0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_bad_listen_flag_is_refused_with_its_name() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.pilot", "--listen", "nowhere", stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 2
    assert b"--listen" in err
