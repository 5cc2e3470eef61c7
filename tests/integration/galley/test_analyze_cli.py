"""`isthmus analyze` against galley's API (real NATS behind it) and a real Consul catalog."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import aiohttp
import pytest

from services.cli import analyze_cmds

pytestmark = pytest.mark.integration

STORED = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ghost, namespace: shop}
spec:
  hosts: [ghost-service-not-registered]
  http:
  - route:
    - destination: {host: ghost-service-not-registered, subset: v1}
"""
ZERO = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: zero, namespace: shop}
spec:
  hosts: [consul.service.consul]
  http:
  - route:
    - destination: {host: a.service.consul}
      weight: 0
    - destination: {host: b.service.consul}
      weight: 0
"""


async def run(*argv: str) -> int:
    root = argparse.ArgumentParser(prog="isthmus")
    analyze_cmds.register(root.add_subparsers())
    args = root.parse_args(argv)
    return int(await asyncio.to_thread(args.handler, args))


async def test_stored_config_and_files_with_the_catalog(
    galley_url: str, consul_addr: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{galley_url}/v1/apply", data=STORED) as reply:
            assert reply.status == 200
    assert await run("analyze", "--galley", galley_url, "--consul-addr", consul_addr) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in out] == ["[ISM0001]", "[ISM0002]", "[ISM0002]"]
    assert all(line.startswith("Warning [ISM") for line in out)
    assert "spec.hosts[0]: host 'ghost-service-not-registered' is not a service in the Consul catalog" in out[1]

    (tmp_path / "zero.yaml").write_text(ZERO)
    argv = ("analyze", "-f", str(tmp_path / "zero.yaml"), "--galley", galley_url, "--no-consul")
    assert await run(*argv, "--fail-on-warnings") == 1
    (line,) = capsys.readouterr().out.splitlines()  # only findings about the files
    assert line.startswith("Warning [ISM0005] VirtualService shop/zero: spec.http[0].route: every destination")

    (tmp_path / "bad.yaml").write_text(ZERO.replace("weight: 0\n    - ", "weight: -1\n    - "))
    assert await run("analyze", "-f", str(tmp_path / "bad.yaml"), "--no-galley", "--no-consul") == 1
    assert "spec.http[0].route[0].weight" in capsys.readouterr().err
