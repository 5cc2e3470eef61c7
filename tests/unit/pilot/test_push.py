"""Push: configs are written only when their version differs from the stored one; failures are retried."""

from __future__ import annotations

import json

from services.pilot.debounce import Debouncer
from services.pilot.metrics import PilotMetrics
from services.pilot.push import Pusher
from services.pilot.snapshot import Snapshot
from services.pilot.testing import meshed, plain
from shared.bus.names import proxy_key
from shared.clock import FakeClock
from shared.model.proxy_config import ProxyConfig


class MemoryStore:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.puts = 0
        self.reads = 0
        self.fail = False

    async def stored_version(self, key: str) -> str | None:
        self.reads += 1
        value = self.values.get(key)
        return None if value is None else str(json.loads(value)["version"])

    async def put(self, key: str, value: bytes, version: str) -> None:
        if self.fail:
            raise ConnectionError("store unavailable")
        self.puts += 1
        self.values[key] = value


def pusher(store: MemoryStore) -> Pusher:
    clock = FakeClock()
    return Pusher(store, Snapshot, Debouncer(clock), PilotMetrics(), "cluster.local", "isthmus-system", clock)


SNAPSHOT = Snapshot.build([], [meshed("a", "10.0.0.1"), meshed("b", "10.0.0.2"), plain("db", "10.0.0.9", 5432)])


async def test_each_proxy_gets_its_config_once() -> None:
    store = MemoryStore()
    first = pusher(store)
    assert await first.push(SNAPSHOT) == 0
    assert sorted(store.values) == [proxy_key("a-10.0.0.1"), proxy_key("b-10.0.0.2")]
    config = ProxyConfig.from_json(store.values[proxy_key("a-10.0.0.1")])
    assert config.version == first.versions["a-10.0.0.1"] != ""
    await first.push(SNAPSHOT)
    assert store.puts == 2


async def test_a_second_pilot_with_the_same_input_writes_nothing() -> None:
    store = MemoryStore()
    await pusher(store).push(SNAPSHOT)
    await pusher(store).push(Snapshot.build([], reversed(SNAPSHOT.instances)))
    assert store.puts == 2


async def test_a_catalog_change_rewrites_the_proxies() -> None:
    store = MemoryStore()
    p = pusher(store)
    await p.push(SNAPSHOT)
    await p.push(Snapshot.build([], [*SNAPSHOT.instances, meshed("b", "10.0.0.3")]))
    assert store.puts == 5
    config = ProxyConfig.from_json(store.values[proxy_key("a-10.0.0.1")])
    b = next(c for c in config.clusters if c.name == "outbound|80||b")
    assert [e.address for e in b.endpoints] == ["10.0.0.2", "10.0.0.3"]


async def test_a_failed_write_is_counted_and_retried_next_push() -> None:
    store = MemoryStore()
    p = pusher(store)
    store.fail = True
    assert await p.push(SNAPSHOT) == 2
    store.fail = False
    assert await p.push(SNAPSHOT) == 0
    assert store.puts == 2


async def test_keys_this_pilot_wrote_are_not_read_again() -> None:
    store = MemoryStore()
    p = pusher(store)
    await p.push(SNAPSHOT)
    assert store.reads == 2
    await p.push(Snapshot.build([], [*SNAPSHOT.instances, meshed("c", "10.0.0.4")]))
    assert store.reads == 3  # only the new proxy's key is read; a and b are written straight away
    assert store.puts == 5
