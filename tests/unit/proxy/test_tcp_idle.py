"""connectionPool.tcp.idleTimeout: a relayed TCP connection with no byte either way for that long is closed."""

from __future__ import annotations

import asyncio

from services.proxy.tcp_relay import RelayResult, relay
from services.proxy.upstream import TCP_IDLE_TIMEOUT, PoolSettings
from shared.clock import FakeClock
from shared.model.destination_rule import ConnectionPoolSettings


class MemoryStream:
    """One end of a connection: reads what the test feeds it, keeps what is written to it."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.written: list[bytes] = []
        self.closed = False

    async def read(self) -> bytes:
        return await self.incoming.get()

    async def write(self, data: bytes) -> None:
        self.written.append(data)

    async def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        pass


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_idle_connection_closes_and_traffic_postpones_it() -> None:
    clock = FakeClock(start=0.0)
    caller, app = MemoryStream(), MemoryStream()
    running = asyncio.create_task(relay(caller, app, idle_timeout=10.0, clock=clock))
    await _settle()
    await clock.advance(9)
    caller.incoming.put_nowait(b"ping")  # at 9 s: the idle time starts again
    await _settle()
    await clock.advance(9)
    assert not running.done() and app.written == [b"ping"]
    await clock.advance(1.5)  # 10.5 s since the last byte
    result: RelayResult = await asyncio.wait_for(running, 5)
    assert result.idle and not result.reset
    assert caller.closed and app.closed


async def test_without_an_idle_timeout_nothing_watches() -> None:
    clock = FakeClock(start=0.0)
    caller, app = MemoryStream(), MemoryStream()
    running = asyncio.create_task(relay(caller, app, clock=clock))
    await _settle()
    await clock.advance(100_000)
    await _settle()
    assert not running.done()
    caller.incoming.put_nowait(b"")
    app.incoming.put_nowait(b"")
    result = await asyncio.wait_for(running, 5)
    assert not result.idle


def test_istios_default_is_an_hour_and_0s_turns_it_off() -> None:
    assert PoolSettings.of("c", None).tcp_idle_timeout == TCP_IDLE_TIMEOUT == 3600.0
    pool = ConnectionPoolSettings.model_validate({"tcp": {"idleTimeout": "90s"}})
    assert PoolSettings.of("c", pool).tcp_idle_timeout == 90.0
    never = ConnectionPoolSettings.model_validate({"tcp": {"idleTimeout": "0s"}})
    assert PoolSettings.of("c", never).tcp_idle_timeout == 0.0
