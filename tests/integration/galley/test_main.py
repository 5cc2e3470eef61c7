"""The galley process: starts against real NATS, reports its address, answers health checks, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import aiohttp
import pytest

from services.local.processes import free_port

pytestmark = pytest.mark.integration


async def start(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.galley", *argv, stderr=asyncio.subprocess.PIPE
    )


async def wait_for_line(proc: asyncio.subprocess.Process, needle: str) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + 15.0
    seen: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        raw = await asyncio.wait_for(proc.stderr.readline(), left)
        if not raw:
            break
        line = raw.decode().rstrip()
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} not logged; got:\n" + "\n".join(seen))


async def stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        assert proc.stderr is not None
        raise AssertionError((await proc.stderr.read()).decode()) from None


async def test_serves_until_sigterm(nats_url: str) -> None:
    port = free_port()
    proc = await start("--listen", f"127.0.0.1:{port}", "--nats-url", nats_url)
    try:
        line = await wait_for_line(proc, "galley ready on")
        assert line.endswith(f"galley ready on 127.0.0.1:{port}")
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as reply:
            assert reply.status == 200
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as reply:
            assert reply.status == 200
            assert "galley_config_resources" in await reply.text()
    finally:
        code = await stop(proc)
    assert code == 0


async def test_sigterm_while_waiting_for_nats_exits_cleanly() -> None:
    proc = await start("--listen", "127.0.0.1:0", "--nats-url", f"nats://127.0.0.1:{free_port()}")
    try:
        await wait_for_line(proc, "connecting to NATS")
    finally:
        code = await stop(proc)
    assert code == 0


async def test_bad_listen_flag_exits_1_naming_the_flag() -> None:
    proc = await start("--listen", "localhost", "--nats-url", "nats://127.0.0.1:1")
    line = await wait_for_line(proc, "--listen")
    assert "expected HOST:PORT" in line
    assert await asyncio.wait_for(proc.wait(), 15) == 1
