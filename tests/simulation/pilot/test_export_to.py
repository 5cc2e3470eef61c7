"""`exportTo` from config to decision: whose configs a VirtualService, DestinationRule or ServiceEntry shapes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.pilot.generate import class_reuse, generate
from services.pilot.reuse import Reuse
from services.pilot.snapshot import Instance, Snapshot
from services.pilot.testing import meshed, proxy_of, resources
from shared.model.proxy_config import Cluster, ProxyConfig, VirtualHost

TD = "cluster.local"
ROOT = "isthmus-system"

FRONTEND = meshed("frontend", "10.0.0.1", namespace="shop")
ADMIN = meshed("admin", "10.0.0.2", namespace="ops")
BATCH = meshed("batch", "10.0.0.3", namespace="jobs")
REVIEWS_V1 = meshed("reviews", "10.0.1.1", namespace="shop", version="v1")
REVIEWS_V2 = meshed("reviews", "10.0.1.2", namespace="shop", version="v2")
CATALOG = [FRONTEND, ADMIN, BATCH, REVIEWS_V1, REVIEWS_V2]
CALLERS = {"shop": "frontend-10.0.0.1", "ops": "admin-10.0.0.2", "jobs": "batch-10.0.0.3"}


def route(export_to: str = "", subset: str = "v2", namespace: str = "shop", name: str = "reviews") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: [reviews.shop]
  {export_to}
  http: [{{route: [{{destination: {{host: reviews.shop, subset: {subset}}}}}]}}]
---
"""


def rule(export_to: str = "", namespace: str = "shop", name: str = "reviews", max_ejection: int = 10) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: reviews.shop
  {export_to}
  trafficPolicy: {{outlierDetection: {{consecutive5xxErrors: 3, maxEjectionPercent: {max_ejection}}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
"""


def entry(export_to: str = "", port: int = 8080) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: payments, namespace: shop}}
spec:
  hosts: [api.payments.example]
  {export_to}
  resolution: DNS
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
---
"""


PAYMENTS_ROUTE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payments, namespace: jobs}
spec:
  hosts: [api.payments.example]
  http: [{route: [{destination: {host: api.payments.example}}], timeout: 2s}]
---
"""


def configs(config: str, catalog: list[Instance] = CATALOG, reuse: Reuse | None = None) -> dict[str, ProxyConfig]:
    snap = Snapshot.build(resources(config), catalog, reuse)
    return {namespace: generate(snap, proxy_of(snap, proxy_id), TD, ROOT) for namespace, proxy_id in CALLERS.items()}


def vhost(config: ProxyConfig, name: str) -> VirtualHost | None:
    return next((host for host in config.virtual_hosts if host.name == name), None)


def clusters(config: ProxyConfig) -> dict[str, Cluster]:
    return {cluster.name: cluster for cluster in config.clusters}


def reviews_target(config: ProxyConfig) -> str:
    host = vhost(config, "reviews")
    assert host is not None
    return host.routes[0].route[0].cluster


def test_a_virtual_service_exported_to_its_namespace_routes_only_callers_there() -> None:
    by_caller = configs(route("exportTo: ['.']") + rule())
    assert reviews_target(by_caller["shop"]) == "outbound|80|v2|reviews"
    assert reviews_target(by_caller["ops"]) == "outbound|80||reviews"
    assert reviews_target(by_caller["jobs"]) == "outbound|80||reviews"
    assert "outbound|80|v2|reviews" not in clusters(by_caller["ops"])


def test_a_virtual_service_exported_to_a_named_namespace_routes_callers_there_only() -> None:
    by_caller = configs(route("exportTo: [ops]") + rule())
    assert reviews_target(by_caller["ops"]) == "outbound|80|v2|reviews"
    assert reviews_target(by_caller["shop"]) == "outbound|80||reviews"
    assert reviews_target(by_caller["jobs"]) == "outbound|80||reviews"


def test_a_hidden_virtual_service_leaves_the_host_to_the_visible_ones() -> None:
    hidden = route("exportTo: [ops]", subset="v2", name="a-canary")
    public = route(subset="v1", name="b-stable")
    by_caller = configs(hidden + public + rule())
    assert reviews_target(by_caller["ops"]) == "outbound|80|v2|reviews"  # both apply, the canary first
    assert reviews_target(by_caller["shop"]) == "outbound|80|v1|reviews"
    assert reviews_target(by_caller["jobs"]) == "outbound|80|v1|reviews"


def test_a_destination_rule_exported_to_another_namespace_shapes_only_that_namespace_clusters() -> None:
    by_caller = configs(route() + rule("exportTo: [ops]"))
    seen = clusters(by_caller["ops"])["outbound|80|v2|reviews"]
    assert [e.address for e in seen.endpoints] == ["10.0.1.2"]
    assert seen.traffic_policy is not None and seen.traffic_policy.outlier_detection is not None
    for caller in ("shop", "jobs"):  # the rule's own namespace is not in its exportTo either
        unseen = clusters(by_caller[caller])
        assert unseen["outbound|80|v2|reviews"].endpoints == []  # the subset is undefined for them
        assert unseen["outbound|80||reviews"].traffic_policy is None


def test_callers_take_the_first_destination_rule_they_see() -> None:
    local = rule("exportTo: ['.']", namespace="ops", name="reviews-local", max_ejection=50)
    by_caller = configs(route() + local + rule(max_ejection=10))
    # ops < shop: the ops rule comes first for its own namespace; everyone else only sees the shop rule.
    ops = clusters(by_caller["ops"])["outbound|80||reviews"].traffic_policy
    shop = clusters(by_caller["shop"])["outbound|80||reviews"].traffic_policy
    assert ops is not None and ops.outlier_detection is not None
    assert shop is not None and shop.outlier_detection is not None
    assert ops.outlier_detection.max_ejection_percent == 50
    assert shop.outlier_detection.max_ejection_percent == 10
    assert clusters(by_caller["jobs"])["outbound|80||reviews"] == clusters(by_caller["shop"])["outbound|80||reviews"]


def test_a_service_entry_exported_to_its_namespace_gives_other_callers_no_host() -> None:
    by_caller = configs(entry("exportTo: ['.']"))
    assert vhost(by_caller["shop"], "api.payments.example") is not None
    assert "outbound|8080||api.payments.example" in clusters(by_caller["shop"])
    for caller in ("ops", "jobs"):
        assert vhost(by_caller[caller], "api.payments.example") is None
        assert not any(name.endswith("api.payments.example") for name in clusters(by_caller[caller]))


def test_a_service_entry_exported_to_no_namespace_reaches_no_caller() -> None:
    by_caller = configs(entry("exportTo: ['~']"))
    assert all(vhost(config, "api.payments.example") is None for config in by_caller.values())


def test_a_route_to_a_hidden_service_entry_host_resolves_as_an_unknown_host() -> None:
    by_caller = configs(entry("exportTo: ['.', jobs]") + PAYMENTS_ROUTE)
    jobs, ops = by_caller["jobs"], by_caller["ops"]
    host = vhost(jobs, "api.payments.example")
    assert host is not None and host.routes[0].route[0].cluster == "outbound|8080||api.payments.example"
    assert vhost(ops, "api.payments.example") is None  # no ServiceEntry seen: no host to route


@pytest.mark.parametrize("written", ["", "exportTo: []", "exportTo: ['*']"])
def test_an_export_to_every_namespace_is_byte_identical_to_none(written: str) -> None:
    plain = configs(route() + rule() + entry())
    exported = configs(route(written) + rule(written) + entry(written))
    for caller in CALLERS:
        assert exported[caller].stamped() == plain[caller].stamped()


def test_without_restricting_resources_generation_keeps_its_memo_keys_and_reuse_slots() -> None:
    reuse = Reuse()
    snap = Snapshot.build(resources(route("exportTo: ['*']") + rule() + entry()), CATALOG, reuse)
    for proxy in snap.proxies:
        generate(snap, proxy, TD, ROOT)
    assert ("outbound", TD, ROOT) in snap._memo
    assert not any(isinstance(key, tuple) and key[0] == "visibility-class" for key in reuse._slots)
    assert not [key for key in snap._memo if isinstance(key, tuple) and key[0] == "outbound" and len(key) > 3]


def test_callers_in_namespaces_no_export_to_names_share_one_outbound_part() -> None:
    snap = Snapshot.build(
        resources(route("exportTo: ['.']") + rule()), [*CATALOG, meshed("x", "10.0.9.1", namespace="q")]
    )
    configs_by_proxy = {proxy.proxy_id: generate(snap, proxy, TD, ROOT) for proxy in snap.proxies}
    outbound_keys = sorted(str(key) for key in snap._memo if isinstance(key, tuple) and key[0] == "outbound")
    assert outbound_keys == [str(("outbound", TD, ROOT)), str(("outbound", TD, ROOT, "shop"))]
    assert configs_by_proxy["admin-10.0.0.2"].virtual_hosts == configs_by_proxy["x-10.0.9.1"].virtual_hosts


STATES: list[tuple[str, str]] = [
    ("everything public", route() + rule() + entry() + PAYMENTS_ROUTE),
    ("the route is hidden to its namespace", route("exportTo: ['.']") + rule() + entry() + PAYMENTS_ROUTE),
    ("the route moves to ops", route("exportTo: [ops]") + rule() + entry() + PAYMENTS_ROUTE),
    ("the rule is hidden from shop", route("exportTo: [ops]") + rule("exportTo: [ops, jobs]") + entry()),
    ("the entry is hidden to shop", route() + rule("exportTo: [ops]") + entry("exportTo: ['.']") + PAYMENTS_ROUTE),
    ("the entry's port changes", route() + rule() + entry("exportTo: ['.', jobs]", port=9090) + PAYMENTS_ROUTE),
    ("everything public again", route() + rule() + entry(port=9090) + PAYMENTS_ROUTE),
]


def test_every_export_to_change_generates_what_a_fresh_pass_generates() -> None:
    reuse = Reuse()
    for what, config in STATES:
        catalog = [replace(instance) for instance in CATALOG]  # equal, not identical
        carried = configs(config, catalog, reuse)
        fresh = configs(config)
        for caller in CALLERS:
            assert carried[caller].stamped() == fresh[caller].stamped(), (what, caller)


def test_an_export_to_change_reaches_exactly_the_callers_it_concerns() -> None:
    reuse = Reuse()
    before = configs(route() + rule(), reuse=reuse)
    after = configs(route("exportTo: ['.']") + rule(), reuse=reuse)
    assert after["shop"].stamped() == before["shop"].stamped()
    assert after["ops"].stamped() != before["ops"].stamped()
    assert reviews_target(after["ops"]) == "outbound|80||reviews"
    back = configs(route() + rule(), reuse=reuse)
    assert back["ops"].stamped() == before["ops"].stamped()


def test_an_unchanged_pass_reuses_every_class_result() -> None:
    """Each class keeps its own virtual hosts and the clusters of rules only it sees, so classes never evict
    each other's results: a second pass over equal inputs computes nothing again."""
    config = route("exportTo: ['.']") + rule("exportTo: [ops]") + rule(namespace="web", name="public")
    config += entry("exportTo: ['.']") + PAYMENTS_ROUTE
    reuse = Reuse()
    snap = Snapshot.build(resources(config), CATALOG, reuse)
    configs(config, reuse=reuse)
    stores = [reuse, class_reuse(snap, "shop"), class_reuse(snap, "ops")]
    misses = [store.misses for store in stores]
    configs(config, [replace(instance) for instance in CATALOG], reuse)
    assert [store.misses for store in stores] == misses


REVIEWS_TO_PAYMENTS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-to-payments, namespace: jobs}
spec:
  hosts: [reviews.shop]
  http: [{route: [{destination: {host: api.payments.example}}]}]
---
"""


def test_a_destination_resolves_against_the_service_entries_its_caller_sees() -> None:
    """The same VirtualService, seen by two classes, sends to the ServiceEntry's port where the entry is visible
    and to port 80 of an unknown host where it is not: the classes' results must never stand in for each other."""
    reuse = Reuse()
    for _ in range(2):
        by_caller = configs(REVIEWS_TO_PAYMENTS + entry("exportTo: ['.']"), reuse=reuse)
        assert reviews_target(by_caller["shop"]) == "outbound|8080||api.payments.example"
        assert reviews_target(by_caller["ops"]) == "outbound|80||api.payments.example"


DELEGATING_ROOT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop]
  http: [{name: api, delegate: {name: reviews-api}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-api, namespace: shop}
spec:
  exportTo: ['.']
  http: [{route: [{destination: {host: reviews.shop, subset: v1}}]}]
---
"""


def test_a_delegate_is_judged_by_its_root_not_by_the_caller() -> None:
    """Istio checks a delegate's exportTo against its root's namespace: a delegate exported to its own namespace
    serves a public root in that namespace for callers everywhere, and names no visibility class."""
    snap = Snapshot.build(resources(DELEGATING_ROOT + rule()), CATALOG)
    by_caller = {ns: generate(snap, proxy_of(snap, proxy_id), TD, ROOT) for ns, proxy_id in CALLERS.items()}
    assert {reviews_target(config) for config in by_caller.values()} == {"outbound|80|v1|reviews"}
    assert not [key for key in snap._memo if isinstance(key, tuple) and key[0] == "outbound" and len(key) > 3]
