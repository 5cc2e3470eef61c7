"""A ServiceEntry applied through galley's store reaches a proxy's config on a real nats-server and Consul agent."""

from __future__ import annotations

import uuid

import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from services.galley.store import ConfigStore
from services.pilot.app import Pilot, open_bucket
from shared.bus.names import PROXY_CONFIG_BUCKET, proxy_key
from shared.consul import META_UPSTREAMS
from shared.model import parse_resource
from shared.model.proxy_config import ProxyConfig
from tests.integration.pilot.support import Catalog, eventually, mesh_meta

pytestmark = pytest.mark.integration


def service_entry(name: str, namespace: str, host: str, address: str) -> dict[str, object]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [host],
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 8080}],
            "resolution": "STATIC",
            "endpoints": [{"address": address}],
        },
    }


async def caller_config(proxies: KeyValue, caller_id: str) -> ProxyConfig | None:
    """The config pilot stored for the caller, None before it has one."""
    try:
        entry = await proxies.get(proxy_key(caller_id))
    except (KeyNotFoundError, KeyDeletedError):
        return None
    return ProxyConfig.from_json(entry.value or b"")


async def test_an_applied_service_entry_reaches_a_caller_and_its_update_follows(
    pilot: Pilot, bus: NATS, catalog: Catalog
) -> None:
    tag = uuid.uuid4().hex[:8]
    ns, host = f"it-{tag}", f"api-{tag}.example.com"
    caller_id = f"caller-{tag}-1"
    js = bus.jetstream()
    store = await ConfigStore.open(js)
    proxies = await open_bucket(js, PROXY_CONFIG_BUCKET)
    # The caller declares the entry's host as its only upstream, so other tests' proxies never see it.
    await catalog.register(f"caller-{tag}", caller_id, 21101, mesh_meta(caller_id, ns) | {META_UPSTREAMS: host})

    async def endpoints() -> list[tuple[str, int]] | None:
        config = await caller_config(proxies, caller_id)
        if config is None:
            return None
        found = next((c for c in config.clusters if c.name == f"outbound|80||{host}"), None)
        if found is None or [v.domains for v in config.virtual_hosts] != [[host]]:
            return None
        return [(e.address, e.port) for e in found.endpoints]

    try:
        await store.apply([parse_resource(service_entry("api", ns, host, "192.0.2.10"))])
        assert await eventually(endpoints, "the entry's cluster in the caller's config") == [("192.0.2.10", 8080)]
        await store.apply([parse_resource(service_entry("api", ns, host, "192.0.2.11"))])

        async def moved() -> bool:
            return await endpoints() == [("192.0.2.11", 8080)]

        await eventually(moved, "the entry's new endpoint in the caller's config")
    finally:
        await store.delete("ServiceEntry", ns, "api")


async def test_workload_entries_chosen_by_a_selector_follow_as_they_are_applied_and_deleted(
    pilot: Pilot, bus: NATS, catalog: Catalog
) -> None:
    tag = uuid.uuid4().hex[:8]
    ns, host = f"it-{tag}", f"vms-{tag}.example.com"
    caller_id = f"caller-{tag}-1"
    js = bus.jetstream()
    store = await ConfigStore.open(js)
    proxies = await open_bucket(js, PROXY_CONFIG_BUCKET)
    await catalog.register(f"caller-{tag}", caller_id, 21102, mesh_meta(caller_id, ns) | {META_UPSTREAMS: host})
    selecting = service_entry("vms", ns, host, "unused")
    spec = selecting["spec"]
    assert isinstance(spec, dict)
    del spec["endpoints"]
    spec["workloadSelector"] = {"labels": {"app": "legacy"}}

    def workload(name: str, address: str) -> dict[str, object]:
        return {
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"address": address, "labels": {"app": "legacy"}},
        }

    async def endpoints_are(wanted: list[str]) -> bool:
        config = await caller_config(proxies, caller_id)
        found = next((c for c in config.clusters if c.name == f"outbound|80||{host}"), None) if config else None
        return found is not None and [e.address for e in found.endpoints] == wanted

    try:
        await store.apply([parse_resource(selecting), parse_resource(workload("vm-1", "192.0.2.21"))])
        await eventually(lambda: endpoints_are(["192.0.2.21"]), "the chosen WorkloadEntry as the endpoint")
        await store.apply([parse_resource(workload("vm-2", "192.0.2.22"))])
        await eventually(lambda: endpoints_are(["192.0.2.21", "192.0.2.22"]), "a second WorkloadEntry joining")
        await store.delete("WorkloadEntry", ns, "vm-1")
        await eventually(lambda: endpoints_are(["192.0.2.22"]), "a deleted WorkloadEntry leaving")
    finally:
        await store.delete("ServiceEntry", ns, "vms")
        await store.delete("WorkloadEntry", ns, "vm-1")
        await store.delete("WorkloadEntry", ns, "vm-2")


async def test_consul_weights_reach_the_endpoints_a_caller_gets(pilot: Pilot, bus: NATS, catalog: Catalog) -> None:
    tag = uuid.uuid4().hex[:8]
    ns, service = f"it-{tag}", f"sized-{tag}"
    caller_id = f"caller-{tag}-1"
    proxies = await open_bucket(bus.jetstream(), PROXY_CONFIG_BUCKET)
    await catalog.register(f"caller-{tag}", caller_id, 21103, mesh_meta(caller_id, ns) | {META_UPSTREAMS: service})
    await catalog.register(service, f"{service}-big", 21104, mesh_meta(f"{service}-big", ns), weight=4)
    await catalog.register(service, f"{service}-small", 21105, mesh_meta(f"{service}-small", ns))

    async def weights() -> list[tuple[int, int]] | None:
        config = await caller_config(proxies, caller_id)
        found = next((c for c in config.clusters if c.host == service and not c.subset), None) if config else None
        if found is None or len(found.endpoints) != 2:
            return None
        return sorted((e.port, e.weight) for e in found.endpoints)

    assert await eventually(weights, "both instances with their Consul weights") == [(21104, 4), (21105, 1)]
