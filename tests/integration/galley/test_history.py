"""Revisions from JetStream KV through galley's API and the CLI: `isthmus history` and `isthmus rollback`."""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp
import pytest

from services.cli import revision_cmds
from services.galley.store import CONFIG_HISTORY

pytestmark = pytest.mark.integration


def vs(subset: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: product, namespace: shop}}
spec:
  hosts: [product]
  http:
  - route:
    - destination: {{host: product, subset: {subset}}}
"""


async def apply(session: aiohttp.ClientSession, url: str, text: str) -> int:
    async with session.post(f"{url}/v1/apply", data=text, headers={"Content-Type": "application/yaml"}) as reply:
        assert reply.status == 200, await reply.text()
        return int((await reply.json())["applied"][0]["revision"])


async def run(*argv: str) -> int:
    root = argparse.ArgumentParser(prog="isthmus")
    revision_cmds.register(root.add_subparsers())
    args = root.parse_args(argv)
    return int(await asyncio.to_thread(args.handler, args))


async def test_history_and_rollback(galley_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with aiohttp.ClientSession() as session:
        first = await apply(session, galley_url, vs("v1"))
        second = await apply(session, galley_url, vs("v2"))
        async with session.delete(f"{galley_url}/v1/resources/vs/shop/product") as reply:
            assert reply.status == 200

        assert await run("history", "vs", "product", "-n", "shop", "--galley", galley_url, "-o", "json") == 0
        history = json.loads(capsys.readouterr().out)["history"]
        assert [(h["revision"], h["operation"]) for h in history] == [
            (first, "PUT"),
            (second, "PUT"),
            (second + 1, "DEL"),
        ]
        assert history[0]["resource"]["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v1"
        assert history[0]["created"] > 0

        assert await run("rollback", "vs", "product", "-n", "shop", "--to", str(first), "--galley", galley_url) == 0
        assert "rolled back to revision" in capsys.readouterr().out
        async with session.get(f"{galley_url}/v1/resources/vs/shop/product") as reply:
            restored = await reply.json()
        assert restored["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v1"
        assert int(restored["metadata"]["resourceVersion"]) > second + 1  # a new revision, history kept

        assert await run("history", "virtualservice", "product", "-n", "shop", "--galley", galley_url) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split()[:3] == ["REVISION", "OPERATION", "WRITTEN"] and "(deleted)" in table[3]


async def test_rollback_to_a_revision_not_kept_names_the_choices(
    galley_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with aiohttp.ClientSession() as session:
        revisions = [await apply(session, galley_url, vs(f"v{i}")) for i in range(CONFIG_HISTORY + 2)]
    assert await run("rollback", "vs", "product", "-n", "shop", "--to", str(revisions[0]), "--galley", galley_url) == 1
    error = capsys.readouterr().err
    assert f"revision {revisions[0]} is not in the kept history" in error
    assert str(revisions[-1]) in error and str(revisions[1]) not in error.split("back to:")[1].split(", ")
    assert await run("history", "vs", "ghost", "-n", "shop", "--galley", galley_url) == 1
    assert "has no history" in capsys.readouterr().err
