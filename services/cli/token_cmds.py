"""`isthmus token create` mints a bootstrap token with citadel's CA; `isthmus token revoke` puts one on the denylist."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import nats

from services.citadel.ca import CertificateAuthority
from services.citadel.ca_store import CaStateError
from services.citadel.main import DEFAULT_STATE_DIR, duration_seconds
from services.citadel.revocation import revoke
from services.citadel.tokens import TokenRefused, create_token, unverified_claims
from shared.clock import SYSTEM_CLOCK
from shared.identity.spiffe import InvalidSpiffeId
from shared.ports import DEFAULT_NATS_URL, NATS_URL_ENV

DEFAULT_TOKEN_TTL = "720h"
CONNECT_SECONDS = 10.0


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
    revoke_parser = token_commands.add_parser(
        "revoke", help="void a bootstrap token before it expires (citadel refuses it from then on)"
    )
    which = revoke_parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--jti", help="the token's id (its jti claim)")
    which.add_argument("--token", help="the token itself")
    which.add_argument("--token-file", type=Path, help="a file holding the token")
    revoke_parser.add_argument("--nats-url", default=os.environ.get(NATS_URL_ENV, DEFAULT_NATS_URL))
    revoke_parser.set_defaults(handler=revoke_command)


def create_command(args: argparse.Namespace) -> int:
    try:
        ca = CertificateAuthority.load(args.state_dir)
        token = create_token(ca, args.namespace, args.service_account, args.ttl, SYSTEM_CLOCK)
    except (CaStateError, InvalidSpiffeId, ValueError) as error:
        print(f"isthmus token create: {error}", file=sys.stderr)
        return 1
    print(token)
    return 0


def revoke_command(args: argparse.Namespace) -> int:
    try:
        jti, expires_at = _revocation_target(args)
        asyncio.run(_revoke(args.nats_url, jti, expires_at))
    except (TokenRefused, OSError, ValueError) as error:
        reason = error.reason if isinstance(error, TokenRefused) else error
        print(f"isthmus token revoke: {reason}", file=sys.stderr)
        return 1
    print(f"revoked token {jti}")
    return 0


def _revocation_target(args: argparse.Namespace) -> tuple[str, float]:
    if args.jti:
        return args.jti, 0.0
    token = args.token if args.token else args.token_file.read_text().strip()
    claims = unverified_claims(token)
    exp = claims.get("exp")
    return claims["jti"], float(exp) if isinstance(exp, int | float) else 0.0


async def _ignore(_error: Exception) -> None:
    """nats-py reports connection errors here as well as by raising; the raise is what we report."""


async def _revoke(nats_url: str, jti: str, expires_at: float) -> None:
    try:
        client = await asyncio.wait_for(
            nats.connect(
                nats_url,
                connect_timeout=5,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=_ignore,
            ),
            CONNECT_SECONDS,
        )
    except Exception as error:  # nats-py raises several unrelated types for "cannot connect"
        raise OSError(f"cannot reach NATS at {nats_url}: {error}") from error
    try:
        await revoke(client.jetstream(), jti, expires_at)
    finally:
        await client.close()
