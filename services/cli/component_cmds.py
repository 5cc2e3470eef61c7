"""`isthmus citadel|galley|pilot` and `isthmus proxy run`: run one component in the foreground.

A component's module (its flags and its code) is imported only when that component's command is used.
"""

from __future__ import annotations

import argparse
import importlib
from functools import partial
from typing import Any

COMPONENTS = {
    "citadel": "certificate authority: signs workload CSRs into SPIFFE certificates (gRPC over TLS)",
    "galley": "config API: validates Istio-style resources and stores accepted ones in NATS KV",
    "pilot": "discovery and push: watches config and the Consul catalog, writes each proxy's config",
}


def _add_component(subparsers: Any, name: str, module_name: str, help_text: str) -> None:
    """`subparsers` must make DeferredParsers (services.cli.main's do)."""
    subparsers.add_parser(name, help=help_text, description=help_text, load=partial(_load, module_name))


def _load(module_name: str, parser: argparse.ArgumentParser) -> None:
    module = importlib.import_module(module_name)
    module.add_arguments(parser)
    parser.set_defaults(handler=module.run)


def register(subparsers: Any) -> None:
    for name, help_text in COMPONENTS.items():
        _add_component(subparsers, name, f"services.{name}.main", help_text)
    proxy = subparsers.add_parser("proxy", help="the sidecar proxy", description="The Isthmus sidecar proxy.")
    proxy_commands = proxy.add_subparsers(title="proxy commands", metavar="COMMAND")
    _add_component(
        proxy_commands,
        "run",
        "services.proxy.main",
        "run the sidecar next to a local service: registers it in Consul, gets its certificate from citadel, "
        "serves the outbound and mTLS inbound listeners",
    )
    proxy.set_defaults(handler=lambda args: _help(proxy))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
