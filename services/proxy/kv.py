"""The proxy's access to JetStream KV buckets: open one, creating it when nobody has yet."""

from __future__ import annotations

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


async def next_update(watcher: KeyValue.KeyWatcher, wait: float) -> KeyValue.Entry | object | None:
    """The watcher's next item: an Entry, None once the initial values are delivered, or its stop marker.

    Raises nats.errors.TimeoutError when nothing arrives within `wait` seconds.
    """
    item: KeyValue.Entry | object | None = await watcher.updates(timeout=wait)  # type: ignore[no-untyped-call]
    return item


async def stop_watcher(watcher: KeyValue.KeyWatcher) -> None:
    await watcher.stop()  # type: ignore[no-untyped-call]
