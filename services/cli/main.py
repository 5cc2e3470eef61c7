"""The `isthmus` command: one subcommand module per concern, each exposing register(subparsers)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from services.cli.deferred import DeferredParser

# Each module defines `register(subparsers)`, adding subcommands whose handler is set with
# `parser.set_defaults(handler=fn)`; fn(args) returns the exit code. The order is the order of `--help`.
COMMAND_MODULES: tuple[str, ...] = (
    "services.cli.local_cmds",
    "services.cli.config_cmds",
    "services.cli.proxy_status",
    "services.cli.token_cmds",
    "services.cli.component_cmds",
    "services.cli.dashboard_cmds",
    "services.cli.revision_cmds",
    "services.cli.analyze_cmds",
    "services.cli.proxy_config",
    "services.cli.vm_cmds",
)

# Which module registers each command: running one command imports that module only (a sidecar started
# with `isthmus proxy run` must not carry the CA, galley or pilot code). Checked against COMMAND_MODULES
# by the tests.
COMMANDS: dict[str, str] = {
    "up": "services.cli.local_cmds",
    "demo": "services.cli.local_cmds",
    "apply": "services.cli.config_cmds",
    "get": "services.cli.config_cmds",
    "delete": "services.cli.config_cmds",
    "proxy-status": "services.cli.proxy_status",
    "token": "services.cli.token_cmds",
    "citadel": "services.cli.component_cmds",
    "galley": "services.cli.component_cmds",
    "pilot": "services.cli.component_cmds",
    "proxy": "services.cli.component_cmds",
    "dashboard": "services.cli.dashboard_cmds",
    "history": "services.cli.revision_cmds",
    "rollback": "services.cli.revision_cmds",
    "analyze": "services.cli.analyze_cmds",
    "proxy-config": "services.cli.proxy_config",
    "vm": "services.cli.vm_cmds",
}


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isthmus",
        description="Isthmus: a service mesh for plain virtual machines (Istio-style config, NATS, Consul).",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=DeferredParser)
    for name in modules:
        importlib.import_module(name).register(subparsers)
    return parser


def build_parser_for(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser for this command line: only the command's module when argv names a known command (the
    first argument: the top level has no options but -h), else every module (help, usage errors)."""
    module = COMMANDS.get(argv[0]) if argv else None
    return build_parser((module,) if module is not None else COMMAND_MODULES)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser_for(arguments)
    args = parser.parse_args(arguments)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
