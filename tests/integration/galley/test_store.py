"""ConfigStore against the real nats-server: the stored format pilot reads, revisions, all-or-nothing batches."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import KeyNotFoundError

from services.galley.sources import Source
from services.galley.store import CONFIG_HISTORY, Action, ConfigStore, StoreConflict
from services.galley.validate import validate_sources
from shared.bus.names import CONFIG_BUCKET, config_key
from shared.model import Resource, VirtualService, dump_resource, parse_resource

pytestmark = pytest.mark.integration

CANARY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: product, namespace: NS}
spec:
  hosts: [product]
  http:
  - route:
    - destination: {host: product, subset: v1}
      weight: WEIGHT_V1
    - destination: {host: product, subset: v2}
      weight: 10
    timeout: 1500ms
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: product, namespace: NS}
spec:
  host: product
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def canary(namespace: str = "shop", weight_v1: int = 90) -> list[Resource]:
    text = CANARY.replace("NS", namespace).replace("WEIGHT_V1", str(weight_v1))
    batch = validate_sources([Source("canary.yaml", text)])
    assert batch.ok, batch.errors
    return batch.resources


async def test_apply_stores_dump_resource_json_under_config_key(
    store: ConfigStore, nc: NatsClient, bucket: str
) -> None:
    results = await store.apply(canary())
    assert [(r.kind, r.namespace, r.name, r.action) for r in results] == [
        ("VirtualService", "shop", "product", Action.CREATED),
        ("DestinationRule", "shop", "product", Action.CREATED),
    ]
    kv = await nc.jetstream().key_value(bucket)
    entry = await kv.get(config_key("VirtualService", "shop", "product"))
    assert entry.revision == results[0].revision
    data = json.loads(entry.value or b"")
    assert data == dump_resource(canary()[0])
    assert data["spec"]["http"][0]["timeout"] == "1.5s"
    assert parse_resource(data) == canary()[0]
    assert (await kv.status()).history == CONFIG_HISTORY


async def test_unchanged_reapply_keeps_revision_and_change_bumps_it(store: ConfigStore) -> None:
    first = await store.apply(canary())
    again = await store.apply(canary())
    assert [r.action for r in again] == [Action.UNCHANGED, Action.UNCHANGED]
    assert [r.revision for r in again] == [r.revision for r in first]
    changed = await store.apply(canary(weight_v1=80))
    assert [r.action for r in changed] == [Action.CONFIGURED, Action.UNCHANGED]
    assert changed[0].revision > max(r.revision for r in first)
    stored = await store.get("VirtualService", "shop", "product")
    assert stored is not None and stored.revision == changed[0].revision
    assert isinstance(stored.resource, VirtualService)
    assert stored.resource.spec.http[0].route[0].weight == 80


async def test_dry_run_reports_without_writing(store: ConfigStore) -> None:
    results = await store.apply(canary(), dry_run=True)
    assert [(r.action, r.revision) for r in results] == [(Action.CREATED, 0), (Action.CREATED, 0)]
    assert await store.list() == []


async def test_list_filters_by_kind_and_namespace_and_delete(store: ConfigStore) -> None:
    await store.apply(canary("shop") + canary("web"))
    assert len(await store.list()) == 4
    assert [(s.resource.kind, s.resource.metadata.namespace) for s in await store.list(kind="VirtualService")] == [
        ("VirtualService", "shop"),
        ("VirtualService", "web"),
    ]
    assert {s.resource.kind for s in await store.list(namespace="web")} == {"VirtualService", "DestinationRule"}
    assert len(await store.list(kind="DestinationRule", namespace="shop")) == 1
    assert await store.delete("VirtualService", "web", "product") is True
    assert await store.delete("VirtualService", "web", "product") is False
    assert await store.get("VirtualService", "web", "product") is None
    assert len(await store.list(namespace="web")) == 1


async def test_recreate_after_delete(store: ConfigStore) -> None:
    await store.apply(canary())
    await store.delete("VirtualService", "shop", "product")
    (result, _) = await store.apply(canary())
    assert result.action == Action.CREATED


async def test_unreadable_stored_value_is_skipped_in_list_and_replaced_by_apply(
    store: ConfigStore, nc: NatsClient, bucket: str
) -> None:
    kv = await nc.jetstream().key_value(bucket)
    await kv.put(config_key("VirtualService", "shop", "product"), b"{not json")
    assert await store.list() == []
    results = await store.apply(canary())
    assert results[0].action == Action.CONFIGURED


async def test_stored_value_of_another_resource_under_the_key_is_a_conflict(
    store: ConfigStore, nc: NatsClient, bucket: str
) -> None:
    kv = await nc.jetstream().key_value(bucket)
    other = json.dumps(dump_resource(canary("shop")[1])).encode()  # a DestinationRule under a VirtualService key
    await kv.put(config_key("VirtualService", "shop", "product"), other)
    with pytest.raises(StoreConflict, match="already holds DestinationRule shop/product"):
        await store.apply(canary())
    with pytest.raises(KeyNotFoundError):
        await kv.get(config_key("DestinationRule", "shop", "product"))  # nothing of the batch was written


async def test_default_bucket_is_the_shared_config_bucket(nc: NatsClient) -> None:
    namespace = f"galley-{uuid.uuid4().hex[:8]}"
    store = await ConfigStore.open(nc.jetstream())
    try:
        (vs, _) = await store.apply(canary(namespace))
        kv = await nc.jetstream().key_value(CONFIG_BUCKET)
        entry = await kv.get(config_key("VirtualService", namespace, "product"))
        assert entry.revision == vs.revision
    finally:
        await store.delete("VirtualService", namespace, "product")
        await store.delete("DestinationRule", namespace, "product")


async def test_list_is_empty_when_only_delete_markers_remain(store: ConfigStore) -> None:
    await store.apply(canary())
    await store.delete("VirtualService", "shop", "product")
    await store.delete("DestinationRule", "shop", "product")
    assert await store.list() == []
    assert await store.list(kind="VirtualService") == []


async def test_concurrent_applies_of_one_resource_both_land_in_order(store: ConfigStore) -> None:
    await store.apply(canary())
    results = await asyncio.gather(*(store.apply(canary(weight_v1=w)) for w in (10, 20, 30, 40)))
    revisions = sorted(r[0].revision for r in results)
    assert len(set(revisions)) == 4 and all(r[0].action == Action.CONFIGURED for r in results)
    stored = await store.get("VirtualService", "shop", "product")
    assert stored is not None and stored.revision == revisions[-1]
