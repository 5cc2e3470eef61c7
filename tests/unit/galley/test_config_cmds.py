"""The CLI side of config (services/cli/config_cmds.py): rendering and argument handling, no galley needed."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml

from services.cli import config_cmds

VS = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "product", "namespace": "shop", "resourceVersion": "12"},
    "spec": {"hosts": ["product", "product.shop"]},
}
PA = {
    "apiVersion": "security.istio.io/v1",
    "kind": "PeerAuthentication",
    "metadata": {"name": "default", "namespace": "istio-system", "resourceVersion": "3"},
    "spec": {"mtls": {"mode": "STRICT"}},
}


def test_table_aligns_columns_with_kind_specific_summary() -> None:
    text = config_cmds.render("VirtualService", [VS], "table")
    assert text.splitlines() == [
        "NAMESPACE   NAME      REVISION   HOSTS",
        "shop        product   12         product,product.shop",
    ]
    assert config_cmds.render("PeerAuthentication", [PA], "table").splitlines()[1].split() == [
        "istio-system",
        "default",
        "3",
        "STRICT",
    ]


def test_yaml_is_multi_document_and_json_single_or_list() -> None:
    docs = list(yaml.safe_load_all(config_cmds.render("VirtualService", [VS, VS], "yaml")))
    assert docs == [VS, VS]
    assert json.loads(config_cmds.render("VirtualService", [VS], "json", single=True)) == VS
    assert json.loads(config_cmds.render("VirtualService", [VS], "json")) == {"items": [VS]}


def parse(*argv: str) -> argparse.Namespace:
    root = argparse.ArgumentParser(prog="isthmus")
    config_cmds.register(root.add_subparsers())
    return root.parse_args(argv)


def test_galley_url_defaults_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_GALLEY_URL", "http://10.0.0.5:15017")
    assert parse("get", "vs").galley == "http://10.0.0.5:15017"
    monkeypatch.delenv("ISTHMUS_GALLEY_URL")
    assert parse("get", "vs").galley == "http://127.0.0.1:15017"


def test_apply_requires_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("apply")
    assert "-f/--filename" in capsys.readouterr().err


def test_delete_by_name_and_by_file_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("delete", "vs", "product", "-f", "x.yaml")
    assert args.handler(args) == 1
    assert capsys.readouterr().err == "error: give either KIND NAME or -f FILE, not both\n"
