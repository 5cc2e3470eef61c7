"""Builders of snapshots for tests of pilot and its consumers: catalog instances, resources from YAML text."""

from __future__ import annotations

import yaml

from services.pilot.snapshot import Instance, Proxy, Snapshot
from shared.consul import META_APP_PORT, META_GATEWAY, META_MESH, META_NAMESPACE, META_PROXY_ID, META_SERVICE_ACCOUNT
from shared.model import Resource, parse_resource


def meshed(
    service: str,
    address: str,
    port: int = 15006,
    namespace: str = "default",
    account: str | None = None,
    healthy: bool = True,
    app_port: int | None = None,
    gateway: bool = False,
    **labels: str,
) -> Instance:
    proxy_id = f"{service}-{address}"
    meta = {
        META_MESH: "true",
        META_PROXY_ID: proxy_id,
        META_NAMESPACE: namespace,
        META_SERVICE_ACCOUNT: account or service,
        **labels,
    }
    if app_port is not None:
        meta[META_APP_PORT] = str(app_port)
    if gateway:
        meta[META_GATEWAY] = "true"
    return Instance(
        service=service, service_id=proxy_id, node="n1", address=address, port=port, meta=meta, healthy=healthy
    )


def plain(service: str, address: str, port: int, healthy: bool = True) -> Instance:
    return Instance(
        service=service, service_id=f"{service}-{address}", node="n1", address=address, port=port, healthy=healthy
    )


def resources(text: str) -> list[Resource]:
    return [parse_resource(doc) for doc in yaml.safe_load_all(text) if doc]


def snapshot(instances: list[Instance], config: str = "") -> Snapshot:
    return Snapshot.build(resources(config), instances)


def proxy_of(snap: Snapshot, proxy_id: str) -> Proxy:
    return next(p for p in snap.proxies if p.proxy_id == proxy_id)
