"""The `isthmus` command: one subcommand module per concern, each exposing register(subparsers)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module defines `register(subparsers)`, adding subcommands whose handler is set with
# `parser.set_defaults(handler=fn)`; fn(args) returns the exit code.
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isthmus",
        description="Isthmus: a service mesh for plain virtual machines (Istio-style config, NATS, Consul).",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
