"""The `isthmus` entry point: one command imports its own module only, with the same parser as the whole CLI."""

from __future__ import annotations

import argparse
import importlib

import pytest

from services.cli.deferred import DeferredParser
from services.cli.main import COMMAND_MODULES, COMMANDS, build_parser, build_parser_for


def registered_commands(module: str) -> list[str]:
    subparsers = argparse.ArgumentParser().add_subparsers(parser_class=DeferredParser)
    importlib.import_module(module).register(subparsers)
    return list(subparsers.choices)


def test_the_command_index_names_every_command_of_every_module() -> None:
    expected = {command: module for module in COMMAND_MODULES for command in registered_commands(module)}
    assert COMMANDS == expected


def help_text(parser: argparse.ArgumentParser, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "argv", [[], ["proxy"], ["proxy", "run"], ["citadel"], ["galley"], ["pilot"], ["vm", "bundle"]]
)
def test_a_command_parser_prints_the_help_of_the_whole_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    whole = help_text(build_parser(), argv, capsys)
    assert help_text(build_parser_for(argv), argv, capsys) == whole
    assert whole


def test_a_component_flag_parses_as_before() -> None:
    args = build_parser_for(["proxy", "run"]).parse_args(["proxy", "run", "--service", "a", "--app-port", "8080"])
    assert (args.service, args.app_port) == ("a", 8080)
    assert args.handler.__module__ == "services.proxy.main"
