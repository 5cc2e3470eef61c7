"""WorkloadEntry resources chosen by a ServiceEntry's workloadSelector, from config to the endpoints a sidecar gets."""

from __future__ import annotations

from dataclasses import replace

from services.pilot.generate import generate
from services.pilot.reuse import Reuse
from services.pilot.snapshot import Snapshot
from services.pilot.testing import meshed, proxy_of, resources, snapshot
from shared.model.proxy_config import Cluster, ProxyConfig

TD = "cluster.local"
ROOT = "isthmus-system"
CATALOG = [meshed("frontend", "10.0.0.1", namespace="shop")]
CLUSTER = "outbound|80||legacy.shop.example"

SELECTING = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.shop.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  workloadSelector: {labels: {app: legacy}}
---
"""


def workload(name: str, address: str, labels: str, namespace: str = "shop", extra: str = "") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{address: {address}, labels: {labels}{extra}}}
---
"""


VMS = (
    workload("vm-1", "192.0.2.21", "{app: legacy, version: v1}", extra=", locality: eu/west-1")
    + workload("vm-2", "192.0.2.22", "{app: legacy, version: v2}", extra=", ports: {http: 9080}, serviceAccount: old")
    + workload("other-app", "192.0.2.23", "{app: billing}")
    + workload("other-namespace", "192.0.2.24", "{app: legacy}", namespace="default")
    + workload("by-name", "vm-3.example.net", "{app: legacy}")
)


def config_of(text: str, reuse: Reuse | None = None) -> ProxyConfig:
    snap = Snapshot.build(resources(text), CATALOG, reuse) if reuse is not None else snapshot(CATALOG, text)
    return generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)


def cluster(config: ProxyConfig) -> Cluster:
    return next(c for c in config.clusters if c.name == CLUSTER)


def test_the_selector_chooses_workload_entries_of_its_namespace_by_label() -> None:
    endpoints = cluster(config_of(SELECTING + VMS)).endpoints
    assert [(e.address, e.port) for e in endpoints] == [("192.0.2.21", 8080), ("192.0.2.22", 9080)]
    assert [e.labels for e in endpoints] == [
        {"app": "legacy", "locality": "eu/west-1", "version": "v1"},
        {"app": "legacy", "version": "v2"},
    ]
    assert all(e.identity is None and e.healthy for e in endpoints)


def test_a_static_entry_leaves_out_a_workload_entry_named_by_dns_and_a_dns_entry_keeps_it() -> None:
    assert "vm-3.example.net" not in [e.address for e in cluster(config_of(SELECTING + VMS)).endpoints]
    dns = SELECTING.replace("resolution: STATIC", "resolution: DNS")
    assert "vm-3.example.net" in [e.address for e in cluster(config_of(dns + VMS)).endpoints]


def test_istio_mutual_expects_each_workload_entrys_service_account() -> None:
    rule = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: legacy, namespace: shop}
spec:
  host: legacy.shop.example
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
"""
    endpoints = cluster(config_of(SELECTING + VMS + rule)).endpoints
    assert [e.identity for e in endpoints] == [
        "spiffe://cluster.local/ns/shop/sa/default",
        "spiffe://cluster.local/ns/shop/sa/old",
    ]


def test_subsets_split_the_chosen_workload_entries_by_label() -> None:
    rule = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: legacy, namespace: shop}
spec:
  host: legacy.shop.example
  subsets: [{name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.shop.example]
  http: [{route: [{destination: {host: legacy.shop.example, subset: v2}}]}]
---
"""
    config = config_of(SELECTING + VMS + rule)
    subset = next(c for c in config.clusters if c.name == "outbound|80|v2|legacy.shop.example")
    assert [e.address for e in subset.endpoints] == ["192.0.2.22"]


def test_no_workload_entry_chosen_is_a_cluster_without_endpoints() -> None:
    assert cluster(config_of(SELECTING)).endpoints == []


def test_a_workload_entry_added_or_changed_reaches_the_next_config_through_reuse() -> None:
    reuse = Reuse()
    first = cluster(config_of(SELECTING + VMS, reuse))
    again = cluster(config_of(SELECTING + VMS, reuse))
    assert again == first and reuse.hits > 0
    moved = VMS.replace("192.0.2.21", "192.0.2.31") + workload("vm-4", "192.0.2.41", "{app: legacy}")
    addresses = [e.address for e in cluster(config_of(SELECTING + moved, reuse)).endpoints]
    assert addresses == ["192.0.2.22", "192.0.2.31", "192.0.2.41"]


def test_weights_of_workload_entries_inline_endpoints_and_catalog_instances_reach_the_endpoints() -> None:
    weighted = VMS.replace("serviceAccount: old", "serviceAccount: old, weight: 3")
    by_address = {e.address: e.weight for e in cluster(config_of(SELECTING + weighted)).endpoints}
    assert by_address == {"192.0.2.21": 1, "192.0.2.22": 3}
    selector = "  workloadSelector: {labels: {app: legacy}}\n"
    inline = SELECTING.replace(selector, "  endpoints: [{address: 192.0.2.9, weight: 7}]\n")
    assert [e.weight for e in cluster(config_of(inline)).endpoints] == [7]
    heavy = replace(meshed("reviews", "10.0.1.1"), weight=4)
    snap = snapshot([*CATALOG, heavy, meshed("reviews", "10.0.1.2")], "")
    config = generate(snap, proxy_of(snap, "frontend-10.0.0.1"), TD, ROOT)
    reviews = next(c for c in config.clusters if c.name == "outbound|80||reviews")
    assert [(e.address, e.weight) for e in reviews.endpoints] == [("10.0.1.1", 4), ("10.0.1.2", 1)]
