"""Roots of trust from the bus: citadel's PEM bundle in KV, read at start and followed as it rotates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats.js.errors
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from services.proxy.kv import ensure_bucket, next_update, stop_watcher
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


async def follow_trust_bundle(js: JetStreamContext, on_bundle: Callable[[bytes], None], clock: Clock) -> None:
    """Call `on_bundle` with every bundle published (the current one first), forever."""
    backoff = 0.5
    while True:
        try:
            bucket = await ensure_bucket(js, TRUST_BUNDLE_BUCKET)
            watcher = await bucket.watch(TRUST_BUNDLE_KEY)
            try:
                while True:
                    try:
                        entry = await next_update(watcher, 60.0)
                    except TimeoutError:
                        continue
                    if isinstance(entry, KeyValue.Entry):
                        if entry.operation is None and entry.value:
                            _deliver(on_bundle, entry.value)
                    elif entry is not None:
                        return
                    backoff = 0.5
            finally:
                with contextlib.suppress(Exception):
                    await stop_watcher(watcher)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("trust bundle watch failed (%s); retrying in %.1fs", err, backoff)
            await clock.sleep(backoff)
            backoff = min(backoff * 2, RETRY_MAX)


def _deliver(on_bundle: Callable[[bytes], None], bundle: bytes) -> None:
    try:
        on_bundle(bundle)
    except (ValueError, OSError) as err:  # an unusable bundle must not replace a working one
        log.error("ignoring unusable trust bundle: %s", err)
