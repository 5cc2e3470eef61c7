"""Roots of trust from the bus: citadel's PEM bundle in KV, read at start and followed as it rotates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from services.proxy.kv import (
    KV_OPERATION_HEADER,
    ensure_bucket,
    kv_subject,
    next_update,
    recheck_delays,
    stop_watcher,
)
from shared.bus.names import TRUST_BUNDLE_BUCKET, TRUST_BUNDLE_KEY
from shared.clock import Clock

log = logging.getLogger(__name__)

RETRY_MAX = 10.0


async def read_trust_bundle(js: JetStreamContext) -> bytes | None:
    """The current bundle, or None when citadel has not published one yet."""
    bucket = await ensure_bucket(js, TRUST_BUNDLE_BUCKET)
    try:
        entry = await bucket.get(TRUST_BUNDLE_KEY)
    except nats.js.errors.KeyNotFoundError:
        return None
    return entry.value or None


RESYNC_INTERVAL = 60.0
"""A quiet subscription is cross-checked against the stored bundle this often, in case a message was lost."""


async def follow_trust_bundle(
    js: JetStreamContext, on_bundle: Callable[[bytes], None], clock: Clock, nc: NatsClient | None = None
) -> None:
    """Call `on_bundle` with every bundle published (the current one first), forever.

    With `nc`, follows the key's subject with a plain subscription plus reads, like the config watch: a KV
    watch is a JetStream consumer, and a stream serves at most 1,000 of them, which would cap the mesh.
    """
    backoff = 0.5
    while True:
        try:
            if nc is not None:
                await _follow_once(js, nc, on_bundle)
            else:
                await _watch_once(js, on_bundle)
            backoff = 0.5
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("trust bundle watch failed (%s); retrying in %.1fs", err, backoff)
            await clock.sleep(backoff)
            backoff = min(backoff * 2, RETRY_MAX)


async def _follow_once(js: JetStreamContext, nc: NatsClient, on_bundle: Callable[[bytes], None]) -> None:
    updates: asyncio.Queue[bytes] = asyncio.Queue()

    async def published(msg: Msg) -> None:
        if (msg.headers or {}).get(KV_OPERATION_HEADER) is None and msg.data:
            updates.put_nowait(msg.data)

    subscription = await nc.subscribe(kv_subject(TRUST_BUNDLE_BUCKET, TRUST_BUNDLE_KEY), cb=published)
    try:
        last: bytes | None = None
        superseded: bytes | None = None  # what a message just replaced: a read may still return it, once
        delays = recheck_delays(RESYNC_INTERVAL)
        while True:
            current = await read_trust_bundle(js)  # after subscribing; read again soon, see recheck_delays
            if current is not None and current != last and current != superseded:
                last = current
                _deliver(on_bundle, current)
            superseded = None
            while True:
                try:
                    async with asyncio.timeout(next(delays)):
                        bundle = await updates.get()
                except TimeoutError:
                    break
                if bundle != last:
                    superseded, last = last, bundle
                    _deliver(on_bundle, bundle)
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()


async def _watch_once(js: JetStreamContext, on_bundle: Callable[[bytes], None]) -> None:
    bucket = await ensure_bucket(js, TRUST_BUNDLE_BUCKET)
    watcher = await bucket.watch(TRUST_BUNDLE_KEY)
    try:
        while True:
            try:
                entry = await next_update(watcher, RESYNC_INTERVAL)
            except TimeoutError:
                continue
            if isinstance(entry, KeyValue.Entry):
                if entry.operation is None and entry.value:
                    _deliver(on_bundle, entry.value)
            elif entry is not None:
                return
    finally:
        with contextlib.suppress(Exception):
            await stop_watcher(watcher)


def _deliver(on_bundle: Callable[[bytes], None], bundle: bytes) -> None:
    try:
        on_bundle(bundle)
    except (ValueError, OSError) as err:  # an unusable bundle must not replace a working one
        log.error("ignoring unusable trust bundle: %s", err)
