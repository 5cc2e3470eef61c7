"""The proxy's access to JetStream KV buckets: open one, creating it when nobody has yet."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import nats.js.errors
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue


async def ensure_bucket(js: JetStreamContext, bucket: str) -> KeyValue:
    """Open a KV bucket, creating it when missing (another process may win the race; that is fine)."""
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(bucket=bucket)
    except nats.js.errors.Error:
        return await js.key_value(bucket)


STOPPED = object()
"""What next_update returns once the watcher was stopped."""


async def next_update(watcher: KeyValue.KeyWatcher, wait: float) -> KeyValue.Entry | object | None:
    """The watcher's next item: an Entry, None once the initial values are delivered, or STOPPED.

    Raises TimeoutError when nothing arrives within `wait` seconds. (nats-py's own `updates()` uses
    asyncio.wait_for, which on Python 3.11 can swallow a cancellation; asyncio.timeout does not.)
    """
    try:
        async with asyncio.timeout(wait):
            item: KeyValue.Entry | None = await anext(watcher)
    except StopAsyncIteration:
        return STOPPED
    return item


KV_SUBJECT_PREFIX = "$KV"
"""NATS' own subject layout for KV buckets: a put or delete of `key` in `bucket` is a message on
`$KV.<bucket>.<key>` (deletes carry a KV-Operation header)."""


KV_OPERATION_HEADER = "KV-Operation"
"""Header NATS sets on delete ("DEL") and purge ("PURGE") messages of a KV subject; absent on a put."""


def kv_subject(bucket: str, key: str) -> str:
    return f"{KV_SUBJECT_PREFIX}.{bucket}.{key}"


async def stop_watcher(watcher: KeyValue.KeyWatcher) -> None:
    await watcher.stop()  # type: ignore[no-untyped-call]


FIRST_RECHECK = 0.25
"""Seconds after subscribing before the stored value is read a second time (then twice as long each time)."""


def recheck_delays(steady: float) -> Iterator[float]:
    """How long to wait for a message before reading the stored value again, after subscribing to a key.

    A subscription plus one read can miss a write: the server delivers a message only to subscriptions it
    already has, and JetStream stores the message after routing it, so a write that reaches the server just
    before the subscription can also be stored just after the read. Reading again soon, then less and less
    often down to `steady`, bounds that miss to a fraction of a second instead of a whole `steady` period.
    """
    delay = FIRST_RECHECK
    while delay < steady:
        yield delay
        delay *= 2
    while True:
        yield steady
