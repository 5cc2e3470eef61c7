"""Last step of citadel's start: publish the trust bundle (PEM roots) to NATS KV, where every proxy reads it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from shared.bus.names import TRUST_BUNDLE_BUCKET, TRUST_BUNDLE_KEY
from shared.clock import Clock

log = logging.getLogger(__name__)

BUCKET_HISTORY = 5
RETRY_INITIAL_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
RECHECK_SECONDS = 60.0
"""How often a running citadel checks the bundle is still in KV (e.g. after the NATS store was wiped)."""


async def trust_bundle_bucket(js: JetStreamContext) -> KeyValue:
    """The trust-bundle KV bucket, created with history BUCKET_HISTORY if it does not exist yet."""
    try:
        return await js.key_value(TRUST_BUNDLE_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=TRUST_BUNDLE_BUCKET, history=BUCKET_HISTORY)


async def publish_trust_bundle(js: JetStreamContext, bundle_pem: bytes) -> bool:
    """Write the bundle unless KV already holds exactly it (keeps history meaningful); True if written."""
    kv = await trust_bundle_bucket(js)
    if await read_trust_bundle(js) == bundle_pem:
        return False
    await kv.put(TRUST_BUNDLE_KEY, bundle_pem)
    return True


async def read_trust_bundle(js: JetStreamContext) -> bytes | None:
    """The published bundle, or None when citadel has not published one yet."""
    try:
        kv = await js.key_value(TRUST_BUNDLE_BUCKET)
        entry = await kv.get(TRUST_BUNDLE_KEY)
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    return entry.value


async def keep_bundle_published(
    nats_url: str,
    bundle_pem: bytes | Callable[[], bytes],
    clock: Clock,
    changed: asyncio.Event | None = None,
    published: Callable[[bytes], None] | None = None,
) -> None:
    """Run until cancelled: publish the bundle, retrying with backoff while NATS is unreachable, re-checking
    every RECHECK_SECONDS or as soon as `changed` is set (a CA reload). `bundle_pem` may be a function read
    at each check (the bundle of the CA in use); `published` hears every bundle NATS is known to hold (the CA
    handover waits for it). Certificate issuing never waits for this."""
    current = bundle_pem if callable(bundle_pem) else lambda: bundle_pem
    delay = RETRY_INITIAL_SECONDS
    client: NatsClient | None = None
    try:
        while True:
            try:
                if client is None or client.is_closed:
                    client = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=-1)
                bundle = current()
                if await publish_trust_bundle(client.jetstream(), bundle):
                    log.info("published trust bundle to %s/%s", TRUST_BUNDLE_BUCKET, TRUST_BUNDLE_KEY)
                if published is not None:
                    published(bundle)
                delay = RETRY_INITIAL_SECONDS
                await _pause(clock, RECHECK_SECONDS, changed)
            except (OSError, nats.errors.Error) as error:
                log.warning("cannot publish trust bundle to %s yet: %s", nats_url, error)
                await clock.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
    finally:
        if client is not None and not client.is_closed:
            await client.close()


async def _pause(clock: Clock, seconds: float, changed: asyncio.Event | None) -> None:
    """Sleep `seconds` on the clock, or less if `changed` gets set (then cleared for the next change)."""
    if changed is None:
        await clock.sleep(seconds)
        return
    if not changed.is_set():
        sleeper = asyncio.ensure_future(clock.sleep(seconds))
        waiter = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait((sleeper, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waiter):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    changed.clear()
