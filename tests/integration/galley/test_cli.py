"""`isthmus apply / get / delete` handlers against a galley API served over loopback with real NATS behind it."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path

import pytest
import yaml

from services.cli import config_cmds
from services.local.processes import free_port

pytestmark = pytest.mark.integration

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: product, namespace: shop}
spec:
  hosts: [product]
  http:
  - route:
    - destination: {host: product, subset: v1}
"""
DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: product, namespace: shop}
spec:
  host: product
  subsets: [{name: v1, labels: {version: v1}}]
"""


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="isthmus")
    config_cmds.register(root.add_subparsers())
    return root


async def run(*argv: str) -> int:
    """Parse like the isthmus entry point and run the handler off the loop (it blocks on HTTP)."""
    args = parser().parse_args(argv)
    return int(await asyncio.to_thread(args.handler, args))


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "a-vs.yaml").write_text(VS)
    (tmp_path / "b-dr.yaml").write_text(DR)
    return tmp_path


async def test_apply_get_delete(galley_url: str, config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run("apply", "-f", str(config_dir), "--galley", galley_url) == 0
    assert capsys.readouterr().out.splitlines() == [
        "VirtualService shop/product created",
        "DestinationRule shop/product created",
    ]
    assert await run("apply", "-f", str(config_dir / "a-vs.yaml"), "--galley", galley_url) == 0
    assert capsys.readouterr().out == "VirtualService shop/product unchanged\n"
    (config_dir / "c-vs.yaml").write_text(VS.replace("name: product,", "name: cart,").replace("v1}", "v7}"))
    assert await run("apply", "-f", str(config_dir / "c-vs.yaml"), "--galley", galley_url) == 0
    captured = capsys.readouterr()
    assert captured.out == "VirtualService shop/cart created\n"
    assert captured.err.splitlines()[0].startswith(
        "Warning: [ISM0001] VirtualService shop/cart: spec.http[0].route[0].destination.subset: subset 'v7'"
    )
    assert await run("delete", "vs", "cart", "-n", "shop", "--galley", galley_url) == 0
    capsys.readouterr()
    (config_dir / "c-vs.yaml").unlink()

    assert await run("get", "vs", "--galley", galley_url) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAMESPACE", "NAME", "REVISION", "HOSTS"]
    assert row.split()[:2] == ["shop", "product"] and row.split()[3] == "product"

    assert await run("get", "DR", "product", "-n", "shop", "-o", "yaml", "--galley", galley_url) == 0
    assert yaml.safe_load(capsys.readouterr().out)["spec"]["host"] == "product"
    assert await run("get", "virtualservices", "-o", "json", "--galley", galley_url) == 0
    assert [i["kind"] for i in json.loads(capsys.readouterr().out)["items"]] == ["VirtualService"]

    assert await run("delete", "vs", "product", "-n", "shop", "--galley", galley_url) == 0
    assert capsys.readouterr().out == "VirtualService shop/product deleted\n"
    assert await run("get", "vs", "product", "-n", "shop", "--galley", galley_url) == 1
    assert capsys.readouterr().err == "error: VirtualService shop/product not found\n"

    assert await run("delete", "-f", str(config_dir), "--galley", galley_url) == 1
    captured = capsys.readouterr()
    assert captured.out == "DestinationRule shop/product deleted\n"
    assert captured.err == "error: VirtualService shop/product not found\n"


async def test_apply_errors_go_to_stderr_with_exit_1(
    galley_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "canary.yaml"
    broken.write_text(VS.replace("subset: v1}", "subset: v1}\n      weight: -1") + "---\n" + VS)
    assert await run("apply", "-f", str(broken), "--galley", galley_url) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: {broken}: document 1 (VirtualService shop/product): spec.http[0].route[0].weight: "
        "Input should be greater than or equal to 0",
        f"error: {broken}: document 2 (VirtualService shop/product): metadata: duplicate of the resource in "
        f"{broken} document 1",
    ]
    assert await run("get", "vs", "--galley", galley_url) == 0
    assert "No VirtualService resources found" in capsys.readouterr().err


async def test_dry_run_and_local_file_errors(
    galley_url: str, config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("apply", "-f", str(config_dir / "b-dr.yaml"), "--dry-run", "--galley", galley_url) == 0
    assert capsys.readouterr().out == "DestinationRule shop/product created (dry run)\n"
    assert await run("get", "dr", "product", "-n", "shop", "--galley", galley_url) == 1
    capsys.readouterr()
    assert await run("apply", "-f", str(config_dir / "missing.yaml"), "--galley", galley_url) == 1
    assert "missing.yaml: no such file or directory" in capsys.readouterr().err
    assert await run("get", "envoyfilter", "--galley", galley_url) == 1
    assert "'envoyfilter' is not supported" in capsys.readouterr().err
    assert await run("delete", "vs", "--galley", galley_url) == 1
    assert "delete needs KIND and NAME, or -f FILE" in capsys.readouterr().err


async def test_unreachable_galley_is_one_line_and_exit_2(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert await run("apply", "-f", str(config_dir), "--galley", url) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: cannot reach galley at {url}")
    assert await run("get", "vs", "--galley", url) == 2
    assert await run("delete", "vs", "product", "--galley", url) == 2


async def test_apply_from_stdin(
    galley_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(DR.encode())))
    assert await run("apply", "-f", "-", "--galley", galley_url) == 0
    assert capsys.readouterr().out == "DestinationRule shop/product created\n"
