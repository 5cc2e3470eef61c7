"""`isthmus dashboard` flags and the view it serves before and after a refresh."""

from __future__ import annotations

import aiohttp
import pytest

from services.cli.main import build_parser
from services.dashboard import server


def test_cli_command_and_bad_flags_name_the_flag(caplog: pytest.LogCaptureFixture) -> None:
    args = build_parser().parse_args(["dashboard", "--listen", "nonsense", "--interval", "1"])
    assert args.handler is server.run
    assert server.run(args) == 2
    assert "--listen 'nonsense'" in caplog.text


async def test_unreachable_sources_are_problems_not_failures() -> None:
    view = server.MeshView("127.0.0.1:1", nats_url=None)
    async with aiohttp.ClientSession() as session:
        result = await view.refresh(session)
    assert result["nodes"] == [] and result["edges"] == []
    assert result["problems"] and "consul at 127.0.0.1:1" in result["problems"][0]
