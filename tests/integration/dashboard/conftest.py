"""Fixtures for the dashboard: the telemetry suite's sidecars, and a headless Chromium driven over DevTools."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.telemetry.conftest import make_sidecar, otlp

__all__ = ["Browser", "browser", "make_sidecar", "otlp"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DEVTOOLS = re.compile(r"DevTools listening on (ws://[^\s]+)")


class Browser:
    """One page of a headless Chromium, driven with the DevTools protocol over its WebSocket."""

    def __init__(self, process: subprocess.Popen[bytes], session: aiohttp.ClientSession) -> None:
        self.process = process
        self._session = session
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    async def attach(self, devtools_http: str) -> None:
        async with self._session.get(f"{devtools_http}/json/list") as reply:
            targets: list[dict[str, Any]] = await reply.json(content_type=None)
        page = next(t for t in targets if t.get("type") == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        call_id = next(self._ids)
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = await self._ws.receive_json(timeout=30)
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = await self.send("Runtime.evaluate", expression=f"JSON.stringify({expression})", returnByValue=True)
        value = result.get("result", {}).get("value")
        return json.loads(value) if isinstance(value, str) else None

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install -y chromium)")
    process = _launch(CHROMIUM, tmp_path / "chromium")
    session = aiohttp.ClientSession()
    page = Browser(process, session)
    try:
        ws_url = await asyncio.wait_for(asyncio.to_thread(_devtools_url, process), 60)
        http = ws_url.split("/devtools/")[0].replace("ws://", "http://")
        await page.attach(http)
        yield page
    finally:
        await page.close()
        await session.close()
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)
        if process.stderr is not None:
            process.stderr.close()


def _launch(chromium: str, profile: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _devtools_url(process: subprocess.Popen[bytes]) -> str:
    assert process.stderr is not None
    for raw in process.stderr:
        found = DEVTOOLS.search(raw.decode(errors="replace"))
        if found:
            return found.group(1)
    raise RuntimeError(f"chromium exited ({process.wait()}) without a DevTools endpoint")
