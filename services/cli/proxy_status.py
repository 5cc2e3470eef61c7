"""`isthmus proxy-status`: every proxy's sync state, from the config pilot sent and the ACK/NACK it answered."""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import dataclass
from typing import Any

import nats
from nats.js.errors import BucketNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from shared.bus.codec import Ack
from shared.bus.names import PROXY_CONFIG_BUCKET, PROXY_STATUS_BUCKET
from shared.model.proxy_config import ProxyConfig
from shared.ports import DEFAULT_NATS_URL, NATS_URL_ENV

SYNCED = "SYNCED"
STALE = "STALE"
NACKED = "NACKED"
NOT_SENT = "NOT SENT"


@dataclass(frozen=True)
class ProxyStatus:
    proxy_id: str
    service: str
    sent_version: str
    acked_version: str
    state: str
    error: str | None


def sync_state(sent_version: str | None, ack: Ack | None) -> str:
    """SYNCED: running what was sent; NACKED: rejected what was sent; STALE: not yet answered; NOT SENT."""
    if not sent_version:
        return NOT_SENT
    if ack is None or ack.version != sent_version:
        return STALE
    return SYNCED if ack.accepted else NACKED


async def _entries(js: Any, bucket: str) -> dict[str, bytes]:
    try:
        kv: KeyValue = await js.key_value(bucket)
    except BucketNotFoundError:
        return {}
    try:
        keys = await kv.keys()
    except NoKeysError:
        return {}
    values: dict[str, bytes] = {}
    for key in keys:
        entry = await kv.get(key)
        if entry.value:
            values[key] = entry.value
    return values


LIST_TIMEOUT = 10.0
"""Reading both buckets must end by then (a key listing is a watcher that could otherwise wait forever)."""


class StatusUnavailable(RuntimeError):
    """NATS answered but the proxy buckets could not be read in time; the message says so."""


async def collect(nats_url: str) -> list[ProxyStatus]:
    connection = await nats.connect(nats_url, connect_timeout=3, max_reconnect_attempts=0)
    try:
        js = connection.jetstream()
        async with asyncio.timeout(LIST_TIMEOUT):
            configs = await _entries(js, PROXY_CONFIG_BUCKET)
            acks = await _entries(js, PROXY_STATUS_BUCKET)
    except TimeoutError:
        raise StatusUnavailable(
            f"reading the proxy buckets at {nats_url} did not finish within {LIST_TIMEOUT:.0f}s"
        ) from None
    finally:
        await connection.close()
    rows = []
    for key in sorted(set(configs) | set(acks)):
        config = ProxyConfig.from_json(configs[key]) if key in configs else None
        ack = Ack.from_json(acks[key]) if key in acks else None
        sent = config.version if config else None
        rows.append(
            ProxyStatus(
                proxy_id=config.proxy_id if config else (ack.proxy_id if ack else key),
                service=f"{config.service}.{config.namespace}" if config else "-",
                sent_version=sent or "-",
                acked_version=(ack.applied_version or "-") if ack else "-",
                state=sync_state(sent, ack),
                error=ack.error if ack and not ack.accepted else None,
            )
        )
    return rows


def format_table(rows: list[ProxyStatus]) -> str:
    header = ("PROXY", "SERVICE", "SENT", "RUNNING", "STATUS")
    table = [header] + [(r.proxy_id, r.service, r.sent_version, r.acked_version, r.state) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table]
    lines += [f"{r.proxy_id}: NACK: {r.error}" for r in rows if r.error]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    try:
        rows = asyncio.run(collect(args.nats_url))
    except StatusUnavailable as err:
        print(f"isthmus: {err}")
        return 2
    except (OSError, nats.errors.NoServersError, TimeoutError) as err:
        print(f"isthmus: cannot reach NATS at {args.nats_url}: {err}")
        return 2
    print(format_table(rows) if rows else "no proxies yet")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "proxy-status",
        help="show every proxy's config sync state (SYNCED / STALE / NACKED / NOT SENT)",
        description="Compares the config version pilot sent each proxy with the version the proxy ACKed or NACKed.",
    )
    parser.add_argument(
        "--nats-url",
        default=os.environ.get(NATS_URL_ENV, DEFAULT_NATS_URL),
        help=f"NATS server (default ${NATS_URL_ENV} or {DEFAULT_NATS_URL})",
    )
    parser.set_defaults(handler=_run)
