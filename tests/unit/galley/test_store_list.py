"""A listing that comes back empty from a bucket holding messages is read again (nats-py's watcher can signal
the end before the first value when the values arrive while it is set up)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from services.galley.store import ConfigStore, encode_resource
from shared.model import parse_resource

RESOURCE = parse_resource(
    {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "product", "namespace": "shop"},
        "spec": {"hosts": ["product"], "http": [{"route": [{"destination": {"host": "product"}}]}]},
    }
)


class Watcher:
    def __init__(self, entries: list[Any]) -> None:
        self._entries = [*entries, None]

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> Any:
        return self._entries.pop(0)

    async def stop(self) -> None:
        return None


class RacyBucket:
    """Its first watch ends at once (the race); later ones deliver the stored value."""

    def __init__(self, messages: int) -> None:
        self.watches = 0
        self._messages = messages

    async def watch(self, pattern: str, ignore_deletes: bool) -> Watcher:
        self.watches += 1
        if self.watches == 1 or not self._messages:
            return Watcher([])
        return Watcher([SimpleNamespace(key="k", value=encode_resource(RESOURCE), revision=7)])

    async def status(self) -> Any:
        return SimpleNamespace(stream_info=SimpleNamespace(state=SimpleNamespace(messages=self._messages)))


async def test_an_empty_listing_from_a_bucket_with_messages_is_read_again() -> None:
    bucket = RacyBucket(messages=1)
    found = await ConfigStore(bucket).list("VirtualService")  # type: ignore[arg-type]
    assert [(item.resource.metadata.name, item.revision) for item in found] == [("product", 7)]
    assert bucket.watches == 2


async def test_an_empty_bucket_is_listed_once() -> None:
    bucket = RacyBucket(messages=0)
    assert await ConfigStore(bucket).list() == []  # type: ignore[arg-type]
    assert bucket.watches == 1
