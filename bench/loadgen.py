"""Data-plane benchmark load: open-loop (fixed offered rate) and closed-loop (max throughput) HTTP/1.1 clients.

Each of the keep-alive connections is an asyncio Protocol sending one pre-built request and parsing only
what it needs of the response (status, Content-Length or chunked framing). Open loop follows wrk2: every
connection has its own schedule at rate/connections, offset so the connections interleave. A request
whose connection was still busy at its scheduled time is sent as soon as the connection frees and its
latency counts from the scheduled time (no coordinated omission); a request sent on an idle connection
counts from its actual send, so the generator's own timer granularity (1 ms on uvloop) is not charged to
the target. How late the generator wakes up is reported as `timer_lag_p99_ms`; an achieved rate below the
offered one says the generator or the target fell behind.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import cast

from bench.stats import LatencySummary, percentile

_now = time.perf_counter


class _Closed(Exception):
    """The server closed the connection before the response was complete."""


class _Client(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, float]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(_Closed(str(exc or "closed by the server")))

    def send(self, payload: bytes) -> asyncio.Future[tuple[int, float]]:
        """Write the request; the future gives (status, completion time) once the whole response is in."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        done = _complete(self._buffer)
        if done is None:
            return
        status, used = done
        del self._buffer[:used]
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((status, _now()))


def _complete(buffer: bytearray) -> tuple[int, int] | None:
    """(status, bytes used) when `buffer` starts with a whole response, else None."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(buffer[:head_end]).lower()
    status = int(head[9:12])
    start = head_end + 4
    marker = head.find(b"\r\ncontent-length:")
    if marker >= 0:
        line_end = head.find(b"\r\n", marker + 2)
        length = int(head[marker + 17 : line_end if line_end >= 0 else None])
        return (status, start + length) if len(buffer) >= start + length else None
    if b"\r\ntransfer-encoding: chunked" in head:
        position = start
        while True:
            size_end = buffer.find(b"\r\n", position)
            if size_end < 0:
                return None
            size = int(bytes(buffer[position:size_end]).split(b";")[0], 16)
            position = size_end + 2 + size + 2
            if len(buffer) < position:
                return None
            if size == 0:
                return status, position
    return status, start


def request_bytes(host: str, path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: isthmus-bench\r\n\r\n".encode()


@dataclass
class LoadResult:
    offered_rps: float | None
    """None: closed loop (as fast as the target answers)."""
    duration_s: float
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    non_2xx: int = 0
    timer_lags_s: list[float] = field(default_factory=list)

    @property
    def achieved_rps(self) -> float:
        return len(self.latencies_s) / self.duration_s if self.duration_s else 0.0

    @property
    def summary(self) -> LatencySummary:
        return LatencySummary.of(self.latencies_s)

    @property
    def timer_lag_p99_ms(self) -> float:
        return percentile(sorted(self.timer_lags_s), 0.99) * 1000.0 if self.timer_lags_s else 0.0

    @property
    def behind(self) -> bool:
        """The offered rate was not reached (by more than 3 %)."""
        return self.offered_rps is not None and self.achieved_rps < 0.97 * self.offered_rps


async def _connect(host: str, port: int) -> _Client:
    _, client = await asyncio.get_running_loop().create_connection(_Client, host, port)
    return client


async def _connection_loop(
    host: str,
    port: int,
    payload: bytes,
    start: float,
    end: float,
    interval: float | None,
    offset: float,
    result: LoadResult,
    recording_from: float,
) -> None:
    """One connection's share: scheduled sends (interval set) or back-to-back sends (interval None)."""
    client = await _connect(host, port)
    sleep = asyncio.sleep
    index = 0
    try:
        while True:
            now = _now()
            if now >= end:  # open loop: what is still scheduled was missed, and `behind` says so
                return
            if interval is None:
                origin = now
            else:
                scheduled = start + offset + index * interval
                index += 1
                if scheduled >= end:
                    return
                if now < scheduled:
                    await sleep(scheduled - now)
                    origin = _now()
                    if scheduled >= recording_from:
                        result.timer_lags_s.append(max(0.0, origin - scheduled))
                else:
                    origin = scheduled
            if client.closed:
                client = await _connect(host, port)
            try:
                status, done = await client.send(payload)
            except _Closed:
                if origin >= recording_from:
                    result.errors += 1
                continue
            if origin < recording_from:
                continue
            result.latencies_s.append(done - origin)
            if not 200 <= status < 300:
                result.non_2xx += 1
    finally:
        if client.transport is not None:
            client.transport.close()


async def run_load(
    host: str,
    port: int,
    payload: bytes,
    duration_s: float,
    connections: int = 16,
    rate: float | None = None,
    warmup_s: float = 1.0,
) -> LoadResult:
    """Drive `connections` keep-alive connections for warmup + duration; only the last `duration_s` is recorded.

    `rate` in requests/s (open loop) or None (closed loop, max throughput).
    """
    result = LoadResult(rate, duration_s)
    start = _now() + 0.05
    recording_from = start + warmup_s
    end = recording_from + duration_s
    interval = connections / rate if rate else None
    step = (interval or 0.0) / connections
    loops = [
        _connection_loop(host, port, payload, start, end, interval, index * step, result, recording_from)
        for index in range(connections)
    ]
    await asyncio.gather(*loops)
    return result
