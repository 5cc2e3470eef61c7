"""`isthmus token create`: mint a bootstrap token with the CA in citadel's state directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from services.citadel.ca import CertificateAuthority
from services.citadel.ca_store import CaStateError
from services.citadel.main import DEFAULT_STATE_DIR, duration_seconds
from services.citadel.tokens import create_token
from shared.clock import SYSTEM_CLOCK
from shared.identity.spiffe import InvalidSpiffeId

DEFAULT_TOKEN_TTL = "720h"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    token = subparsers.add_parser("token", help="bootstrap tokens for new workloads")
    token_commands = token.add_subparsers(title="token commands", metavar="COMMAND")
    create = token_commands.add_parser(
        "create",
        help="print a token that lets one namespace/service account get its first certificate",
    )
    create.add_argument("--state-dir", type=Path, default=Path(DEFAULT_STATE_DIR), help="citadel's state directory")
    create.add_argument("--namespace", required=True)
    create.add_argument("--service-account", required=True)
    create.add_argument(
        "--ttl", type=duration_seconds, default=duration_seconds(DEFAULT_TOKEN_TTL), help="token lifetime (720h)"
    )
    create.set_defaults(handler=create_command)


def create_command(args: argparse.Namespace) -> int:
    try:
        ca = CertificateAuthority.load(args.state_dir)
        token = create_token(ca, args.namespace, args.service_account, args.ttl, SYSTEM_CLOCK)
    except (CaStateError, InvalidSpiffeId, ValueError) as error:
        print(f"isthmus token create: {error}", file=sys.stderr)
        return 1
    print(token)
    return 0
