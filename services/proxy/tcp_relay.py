"""The body of every TCP proxy connection: bytes both ways between two streams, half-close passed on, then close.

One task per direction reads a chunk, counts it and writes it to the other side, waiting for that side's
buffer to drain before reading more (back-pressure: a slow reader stops the fast writer, memory stays
bounded). End of stream in one direction becomes a half-close (`write_eof`) on the other, and the other
direction keeps flowing until it ends too; then both streams are closed. A reset or error in either
direction closes both at once. Cancelling the relay (proxy shutdown) closes both streams. With an idle
timeout (DestinationRule `connectionPool.tcp.idleTimeout`), a connection with no byte either way for that
long is closed too, timed on the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from services.proxy.tcp_stream import ByteStream
from shared.clock import SYSTEM_CLOCK, Clock

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
    idle: bool = False
    """Closed by the idle timeout."""


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


async def _idle(limit: float, clock: Clock, last_activity: Callable[[], float]) -> None:
    """Returns once nothing has moved for `limit` seconds."""
    while True:
        remaining = last_activity() + limit - clock.monotonic()
        if remaining <= 0:
            return
        await clock.sleep(remaining)


async def relay(
    downstream: ByteStream,
    upstream: ByteStream,
    on_received: Counter = _ignore,
    on_sent: Counter = _ignore,
    idle_timeout: float | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> RelayResult:
    """Run both directions until both end (or one fails, or nothing moves for `idle_timeout` seconds); the
    streams are closed when this returns."""
    result = RelayResult()
    last_activity = clock.monotonic()

    def received(count: int) -> None:
        nonlocal last_activity
        result.received += count
        last_activity = clock.monotonic()
        on_received(count)

    def sent(count: int) -> None:
        nonlocal last_activity
        result.sent += count
        last_activity = clock.monotonic()
        on_sent(count)

    pumps = [
        asyncio.create_task(_pump(downstream, upstream, received)),
        asyncio.create_task(_pump(upstream, downstream, sent)),
    ]
    tasks = list(pumps)
    watchdog = None
    if idle_timeout:
        watchdog = asyncio.create_task(_idle(idle_timeout, clock, lambda: last_activity))
        tasks.append(watchdog)
    try:
        pending: set[asyncio.Task[None]] = set(tasks)
        while not all(pump.done() for pump in pumps):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if watchdog in done:
                result.idle = True
                log.debug("tcp relay idle for %ss: closing", idle_timeout)
                break
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
