"""Bootstrap token revocation: a jti denylist in NATS KV that citadel follows and consults before trusting a token.

`isthmus token revoke` writes `<jti> -> <exp>` to TOKEN_REVOCATION_BUCKET; every citadel watches the bucket
and keeps the set in memory. Until the first full read has arrived the list is not `ready`, and token logins
are refused (fail closed); renewals with a valid certificate do not depend on it. The stored exp is
informational (an operator may purge entries after it); a listed jti stays refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from shared.bus.names import TOKEN_REVOCATION_BUCKET, key_token
from shared.clock import Clock

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0


async def revocation_bucket(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(TOKEN_REVOCATION_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=TOKEN_REVOCATION_BUCKET, history=1)


async def revoke(js: JetStreamContext, jti: str, expires_at: float) -> None:
    """Adds `jti` to the denylist; `expires_at` (the token's exp) lets readers forget it afterwards."""
    if not jti or key_token(jti) != jti:
        raise ValueError(f"jti {jti!r} is not a token id (letters, digits, '-', '_', '=')")
    kv = await revocation_bucket(js)
    await kv.put(jti, f"{expires_at:.0f}".encode())


class RevocationList:
    """The denylist as citadel sees it; `revoked(jti)` is what token verification calls."""

    def __init__(self) -> None:
        self._revoked: dict[str, float] = {}
        self.ready = asyncio.Event()

    def revoked(self, jti: str) -> bool:
        if not self.ready.is_set():
            raise RevocationUnknown("the token revocation list is not loaded yet")
        return jti in self._revoked

    def apply(self, jti: str, value: bytes | None) -> None:
        if value is None:
            self._revoked.pop(jti, None)
            return
        try:
            expires_at = float(value.decode())
        except ValueError:
            expires_at = 0.0  # unreadable expiry: keep it revoked for good
        self._revoked[jti] = expires_at

    async def follow(self, js: JetStreamContext) -> None:
        """Run until cancelled: watch the bucket, marking the list ready once the initial values are in."""
        kv = await revocation_bucket(js)
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:  # end of the initial values
                    self.ready.set()
                    log.info("token revocation list loaded: %d revoked", len(self._revoked))
                    continue
                deleted = entry.operation in ("DEL", "PURGE")
                self.apply(entry.key, None if deleted else entry.value)
                if self.ready.is_set() and not deleted:
                    log.info("bootstrap token %s revoked", entry.key)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]


class RevocationUnknown(RuntimeError):
    """Citadel cannot tell whether a token was revoked: token logins fail closed."""


async def follow_revocations(nats_url: str, revocations: RevocationList, clock: Clock) -> None:
    """Connect (retrying) and follow the denylist until cancelled."""
    client: NatsClient | None = None
    try:
        while True:
            try:
                if client is None or client.is_closed:
                    client = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=-1)
                await revocations.follow(client.jetstream())
            except (OSError, nats.errors.Error) as error:
                log.warning("cannot follow token revocations on %s yet: %s", nats_url, error)
            await clock.sleep(RETRY_SECONDS)
    finally:
        if client is not None and not client.is_closed:
            await client.close()
