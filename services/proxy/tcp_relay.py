"""The body of every TCP proxy connection: bytes both ways between two streams, half-close passed on, then close.

One task per direction reads a chunk, counts it and writes it to the other side, waiting for that side's
buffer to drain before reading more (back-pressure: a slow reader stops the fast writer, memory stays
bounded). End of stream in one direction becomes a half-close (`write_eof`) on the other, and the other
direction keeps flowing until it ends too; then both streams are closed. A reset or error in either
direction closes both at once. Cancelling the relay (proxy shutdown) closes both streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from services.proxy.tcp_stream import ByteStream

log = logging.getLogger(__name__)

Counter = Callable[[int], None]


@dataclass(slots=True)
class RelayResult:
    received: int = 0
    """Bytes from downstream (the caller) to upstream."""
    sent: int = 0
    """Bytes from upstream back to downstream."""
    reset: bool = False
    """A direction ended by an error rather than an end of stream."""


async def _pump(source: ByteStream, sink: ByteStream, count: Counter) -> None:
    while True:
        data = await source.read()
        if not data:
            await sink.write_eof()
            return
        count(len(data))
        await sink.write(data)


def _ignore(_count: int) -> None:
    return None


async def relay(
    downstream: ByteStream,
    upstream: ByteStream,
    on_received: Counter = _ignore,
    on_sent: Counter = _ignore,
) -> RelayResult:
    """Run both directions until both end (or one fails); the streams are closed when this returns."""
    result = RelayResult()

    def received(count: int) -> None:
        result.received += count
        on_received(count)

    def sent(count: int) -> None:
        result.sent += count
        on_sent(count)

    tasks = [
        asyncio.create_task(_pump(downstream, upstream, received)),
        asyncio.create_task(_pump(upstream, downstream, sent)),
    ]
    try:
        pending: set[asyncio.Task[None]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(task.exception() is not None for task in done):
                result.reset = True
                log.debug("tcp relay reset: %s", next(t.exception() for t in done if t.exception() is not None))
                break
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # already counted as a reset
                await task
        downstream.close()
        upstream.close()
        await asyncio.gather(downstream.wait_closed(), upstream.wait_closed())
    return result
