"""Sidecar egress hosts: which Sidecar applies to a proxy and which hosts, clusters and TCP listeners it keeps."""

from __future__ import annotations

from services.pilot.generate import generate
from services.pilot.reuse import Reuse
from services.pilot.snapshot import Instance, Snapshot
from services.pilot.testing import meshed, plain, proxy_of, resources, snapshot
from shared.consul import META_PROTOCOL, META_UPSTREAMS
from shared.model.proxy_config import ProxyConfig

TD = "cluster.local"
ROOT = "isthmus-system"
CALLER = "order-10.0.0.1"

CONFIG = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: product, namespace: shop}
spec:
  hosts: [product]
  http:
  - route:
    - destination: {host: product}
      weight: 90
    - destination: {host: legacy.default}
      weight: 10
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: shop}
spec:
  hosts: [api.payments.example]
  ports: [{number: 443, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: maps, namespace: default}
spec:
  hosts: [tiles.maps.example]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: warehouse, namespace: stock}
spec:
  hosts: [db.warehouse.example]
  ports: [{number: 5432, name: pg, protocol: TCP}]
  resolution: DNS
"""


def sidecar(name: str, namespace: str, hosts: list[str], selector: dict[str, str] | None = None) -> str:
    selected = f"\n  workloadSelector: {{labels: {selector}}}" if selector else ""
    return f"""
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: {name}, namespace: {namespace}}}
spec:{selected}
  egress:
  - hosts: {hosts}
"""


def with_meta(instance: Instance, meta: dict[str, str]) -> Instance:
    merged = dict(instance.meta) | meta
    return Instance(instance.service, instance.service_id, instance.node, instance.address, instance.port, merged)


def world(upstreams: str | None = None, namespace: str = "shop") -> list[Instance]:
    caller = meshed("order", "10.0.0.1", namespace=namespace, app="order", version="v1")
    return [
        with_meta(caller, {META_UPSTREAMS: upstreams} if upstreams is not None else {}),
        meshed("product", "10.0.0.2", namespace="shop"),
        meshed("payment", "10.0.0.3", namespace="shop"),
        meshed("stock", "10.0.0.5", namespace="stock"),
        with_meta(meshed("db", "10.0.0.6", namespace="stock"), {META_PROTOCOL: "tcp"}),
        meshed("mesh-api", "10.0.0.7", namespace=ROOT),
        plain("legacy", "10.0.0.4", 8080),
    ]


def config_of(extra: str = "", upstreams: str | None = None, namespace: str = "shop") -> ProxyConfig:
    snap = snapshot(world(upstreams, namespace), CONFIG + extra)
    return generate(snap, proxy_of(snap, CALLER), TD, ROOT)


def hosts(config: ProxyConfig) -> list[str]:
    return [host.name for host in config.virtual_hosts]


def clusters(config: ProxyConfig) -> list[str]:
    return [cluster.name for cluster in config.clusters]


ALL = [
    "db",
    "legacy",
    "mesh-api",
    "order",
    "payment",
    "product",
    "stock",
    "api.payments.example",
    "tiles.maps.example",
]


def test_without_sidecar_every_service() -> None:
    assert hosts(config_of()) == ALL


def test_own_namespace_wildcard_keeps_the_namespace_services_and_entries_and_their_route_clusters() -> None:
    config = config_of(sidecar("default", "shop", ["./*"]))
    assert hosts(config) == ["order", "payment", "product", "api.payments.example"]
    # product's route sends 10 % to legacy: its cluster comes along, as with --upstream
    assert "outbound|80||legacy" in clusters(config)
    assert "outbound|80||stock" not in clusters(config)


def test_any_namespace_any_host_is_everything() -> None:
    assert config_of(sidecar("default", "shop", ["*/*"])).model_dump() == config_of().model_dump()


def test_named_namespace_exact_host_and_suffix() -> None:
    extra = sidecar("default", "shop", ["stock/stock.stock.svc.cluster.local", "*/*.maps.example", "default/*"])
    assert hosts(config_of(extra)) == ["legacy", "stock", "tiles.maps.example"]
    # an exact host in another namespace than its service's selects nothing
    assert hosts(config_of(sidecar("default", "shop", ["shop/stock.stock"]))) == []
    # any of a service's domains, the consul one included
    assert hosts(config_of(sidecar("default", "shop", ["*/payment.service.consul"]))) == ["payment"]


def test_no_namespace_selects_nothing() -> None:
    config = config_of(sidecar("default", "shop", ["~/*"]))
    assert hosts(config) == [] and clusters(config) == []


def test_selector_wins_over_namespace_wide_which_wins_over_root() -> None:
    root = sidecar("default", ROOT, [f"{ROOT}/*"])
    namespace_wide = sidecar("default", "shop", ["stock/*"])
    selecting = sidecar("order", "shop", ["*/api.payments.example"], {"app": "order"})
    other = sidecar("other", "shop", ["*/*"], {"app": "web"})
    assert hosts(config_of(root)) == ["mesh-api"]
    assert hosts(config_of(root + namespace_wide)) == ["db", "stock"]
    assert hosts(config_of(root + namespace_wide + selecting + other)) == ["api.payments.example"]
    assert hosts(config_of(root + other)) == ["mesh-api"]


def test_root_sidecar_reads_own_namespace_as_the_proxy_namespace() -> None:
    root = sidecar("default", ROOT, ["./*"])
    assert hosts(config_of(root)) == ["order", "payment", "product", "api.payments.example"]
    # the caller's own service moves with it; the stock entry has no HTTP port, so no virtual host
    assert hosts(config_of(root, namespace="stock")) == ["db", "order", "stock"]


def test_a_selecting_sidecar_in_the_root_namespace_is_not_mesh_wide() -> None:
    assert hosts(config_of(sidecar("narrow", ROOT, ["./*"], {"app": "order"}))) == ALL


def test_several_selectors_first_by_name_wins() -> None:
    first = sidecar("a", "shop", ["stock/*"], {"app": "order"})
    second = sidecar("b", "shop", ["./*"], {"version": "v1"})
    assert hosts(config_of(second + first)) == ["db", "stock"]


def test_intersection_with_declared_upstreams() -> None:
    extra = sidecar("default", "shop", ["./*"])
    assert hosts(config_of(extra, upstreams="product,stock,api.payments.example")) == [
        "product",
        "api.payments.example",
    ]
    assert hosts(config_of(extra, upstreams="stock")) == []


def test_tcp_listeners_follow_the_sidecar() -> None:
    upstreams = "db:5432,db.warehouse.example:5432"
    assert [listener.name for listener in config_of(upstreams=upstreams).tcp_listeners] == [
        "db:5432",
        "db.warehouse.example:5432",
    ]
    kept = config_of(sidecar("default", "shop", ["*/*.warehouse.example"]), upstreams=upstreams)
    assert [listener.name for listener in kept.tcp_listeners] == ["db.warehouse.example:5432"]
    assert clusters(kept) == ["outbound|5432||db.warehouse.example"]
    assert config_of(sidecar("default", "shop", ["./*"]), upstreams=upstreams).tcp_listeners == []


def test_no_sidecar_output_is_byte_identical_and_other_namespaces_keep_theirs() -> None:
    plain_config = config_of().versioned().to_json()
    # a Sidecar that does not apply to the proxy changes nothing in its config
    assert config_of(sidecar("default", "stock", ["./*"])).versioned().to_json() == plain_config
    assert (
        config_of(upstreams="product").versioned().to_json()
        == config_of(sidecar("default", "stock", ["./*"]), upstreams="product").versioned().to_json()
    )


def test_a_sidecar_change_reaches_the_next_config_through_reuse() -> None:
    reuse = Reuse()
    states = [
        "",
        sidecar("default", "shop", ["./*"]),
        sidecar("default", "shop", ["stock/*"]),
        sidecar("default", "shop", ["stock/*"], {"app": "order"}),
        "",
    ]
    seen = []
    for extra in states:
        carried = Snapshot.build(resources(CONFIG + extra), world(), reuse)
        fresh = snapshot(world(), CONFIG + extra)
        got = generate(carried, proxy_of(carried, CALLER), TD, ROOT).versioned().to_json()
        assert got == generate(fresh, proxy_of(fresh, CALLER), TD, ROOT).versioned().to_json()
        seen.append(hosts(generate(carried, proxy_of(carried, CALLER), TD, ROOT)))
    assert seen == [ALL, ["order", "payment", "product", "api.payments.example"], ["db", "stock"], ["db", "stock"], ALL]
    assert reuse.hits > 0


def test_proxies_sharing_a_sidecar_share_one_scoped_result() -> None:
    instances = [*world(), meshed("order", "10.0.0.9", namespace="shop", app="order")]
    snap = snapshot(instances, CONFIG + sidecar("default", "shop", ["./*"]))
    first = generate(snap, proxy_of(snap, CALLER), TD, ROOT)
    second = generate(snap, proxy_of(snap, "order-10.0.0.9"), TD, ROOT)
    assert all(a is b for a, b in zip(first.virtual_hosts, second.virtual_hosts, strict=True))
