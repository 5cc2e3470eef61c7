"""Which DestinationRule applies, from config to decision: the caller's namespace, the service's, then the root."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.pilot.generate import generate
from services.pilot.generate.hosts import HostIndex, RuleChoice
from services.pilot.reuse import Reuse
from services.pilot.snapshot import Instance, Snapshot
from services.pilot.testing import meshed, proxy_of, resources
from shared.model import DestinationRule
from shared.model.proxy_config import Cluster, ProxyConfig

TD = "cluster.local"
ROOT = "isthmus-system"

CATALOG = [
    meshed("frontend", "10.0.0.1", namespace="shop"),
    meshed("web", "10.0.0.2", namespace="web"),
    meshed("admin", "10.0.0.3", namespace="ops"),
    meshed("mesh-admin", "10.0.0.4", namespace=ROOT),
    meshed("reviews", "10.0.1.1", namespace="shop", version="v1"),
    meshed("reviews", "10.0.1.2", namespace="shop", version="v2"),
]
CALLERS = {"shop": "frontend-10.0.0.1", "web": "web-10.0.0.2", "ops": "admin-10.0.0.3", ROOT: "mesh-admin-10.0.0.4"}

ROUTE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop]
  http: [{route: [{destination: {host: reviews.shop, subset: v2}}]}]
---
"""


def rule(namespace: str, ejection: int, export_to: str = "", name: str = "reviews", host: str = "reviews.shop") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: {host}
  {export_to}
  trafficPolicy: {{outlierDetection: {{consecutive5xxErrors: 3, maxEjectionPercent: {ejection}}}}}
  subsets: [{{name: v2, labels: {{version: v2}}}}]
---
"""


def configs(config: str, catalog: list[Instance] = CATALOG, reuse: Reuse | None = None) -> dict[str, ProxyConfig]:
    snap = Snapshot.build(resources(config), catalog, reuse)
    return {ns: generate(snap, proxy_of(snap, proxy_id), TD, ROOT) for ns, proxy_id in CALLERS.items()}


def cluster(config: ProxyConfig, name: str = "outbound|80|v2|reviews") -> Cluster:
    return next(c for c in config.clusters if c.name == name)


def ejection(config: ProxyConfig, name: str = "outbound|80|v2|reviews") -> int | None:
    """The maxEjectionPercent of the rule the caller's cluster took (each test rule has its own), None without."""
    policy = cluster(config, name).traffic_policy
    if policy is None or policy.outlier_detection is None:
        return None
    return policy.outlier_detection.max_ejection_percent


def chosen(config: str) -> dict[str, int | None]:
    return {caller: ejection(proxy) for caller, proxy in configs(ROUTE + config).items()}


def test_a_client_namespace_rule_applies_to_callers_in_that_namespace_only() -> None:
    # "a-web" < "shop": the old (namespace, name) order gave the web rule to everyone.
    assert chosen(rule("shop", 10) + rule("a-web", 99) + rule("web", 20)) == {
        "shop": 10,
        "web": 20,
        "ops": 10,
        ROOT: 10,
    }


def test_the_root_namespace_rule_is_the_fallback_and_its_own_callers_prefer_it() -> None:
    assert chosen(rule(ROOT, 30)) == dict.fromkeys(CALLERS, 30)
    assert chosen(rule(ROOT, 30) + rule("shop", 10)) == {"shop": 10, "web": 10, "ops": 10, ROOT: 30}
    assert chosen(rule(ROOT, 30) + rule("web", 20)) == {"shop": 30, "web": 20, "ops": 30, ROOT: 30}


def test_a_rule_in_an_unrelated_namespace_applies_to_nobody() -> None:
    by_caller = configs(ROUTE + rule("jobs", 40))
    for config in by_caller.values():
        assert ejection(config) is None
        assert cluster(config).endpoints == []  # its subset is undefined for every caller


def test_an_unrelated_namespace_rule_exported_to_a_caller_still_does_not_apply() -> None:
    assert chosen(rule("jobs", 40, "exportTo: [web, ops]") + rule("shop", 10)) == dict.fromkeys(CALLERS, 10)


def test_a_client_rule_exported_to_its_own_namespace_applies_there() -> None:
    assert chosen(rule("web", 20, "exportTo: ['.']") + rule("shop", 10))["web"] == 20


def test_a_service_rule_exported_to_its_namespace_leaves_other_callers_the_root_rule() -> None:
    assert chosen(rule("shop", 10, "exportTo: ['.']") + rule(ROOT, 30)) == {"shop": 10, "web": 30, "ops": 30, ROOT: 30}


def test_within_one_namespace_the_first_rule_by_name_keeps_its_traffic_policy() -> None:
    assert chosen(rule("web", 21, name="a") + rule("web", 22, name="b") + rule("shop", 10))["web"] == 21


SUBSETS_ONLY = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a-subsets, namespace: shop}
spec:
  host: reviews.shop
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b-policy, namespace: shop}
spec:
  host: reviews.shop
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - {name: v1, labels: {version: v2}}
  - {name: canary, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}
---
"""


def test_rules_in_one_namespace_merge_as_in_istio() -> None:
    """Subsets join (the first rule's win on a name); the later rule's top-level policy fills a gap only."""
    canary_route = ROUTE.replace("subset: v2", "subset: canary") + ROUTE.replace("name: reviews,", "name: r1,").replace(
        "subset: v2", "subset: v1"
    )
    config = configs(canary_route + SUBSETS_ONLY)["shop"]
    canary = cluster(config, "outbound|80|canary|reviews")
    assert [e.address for e in canary.endpoints] == ["10.0.1.2"]
    assert canary.traffic_policy is not None and canary.traffic_policy.load_balancer is not None
    assert canary.traffic_policy.load_balancer.simple == "RANDOM"
    v1 = cluster(config, "outbound|80|v1|reviews")
    assert [e.address for e in v1.endpoints] == ["10.0.1.1"], "the first rule's v1 (version v1) wins"
    assert v1.traffic_policy is not None and v1.traffic_policy.load_balancer is not None
    assert v1.traffic_policy.load_balancer.simple == "ROUND_ROBIN", "no policy in the first: the later one's"


ENTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: billing}
spec:
  hosts: [api.payments.example]
  resolution: DNS
  ports: [{number: 8080, name: http, protocol: HTTP}]
---
"""
ENTRY_CLUSTER = "outbound|8080||api.payments.example"


def test_a_service_entry_host_looks_up_the_entry_namespace() -> None:
    host = "api.payments.example"
    config = ENTRY + rule("billing", 50, host=host) + rule("web", 20, host=host) + rule("a-other", 70, host=host)
    by_caller = configs(config)
    assert {caller: ejection(c, ENTRY_CLUSTER) for caller, c in by_caller.items()} == {
        "shop": 50,
        "web": 20,
        "ops": 50,
        ROOT: 50,
    }


def _old_rule_by_host(self: HostIndex, rules: list[DestinationRule], caller: str | None, root: str) -> RuleChoice:
    """The rule before the lookup path: the first visible one in (namespace, name) order."""
    index: dict[str, DestinationRule] = {}
    for dr in sorted(rules, key=lambda r: (r.metadata.namespace, r.metadata.name)):
        index.setdefault(self.cluster_host(dr.spec.host, dr.metadata.namespace), dr)
    return RuleChoice(index, frozenset())


COMMON = (
    ROUTE
    + rule("shop", 10)
    + rule("shop", 11, name="z-second")
    + rule(ROOT, 30, host="frontend.shop")
    + rule("shop", 12, "exportTo: ['.']", name="a-local")
    + ENTRY
    + rule("billing", 50, host="api.payments.example")
)


def test_rules_only_in_service_or_root_namespaces_give_the_old_output_and_memo_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snap = Snapshot.build(resources(COMMON), CATALOG, Reuse())
    new = {ns: generate(snap, proxy_of(snap, pid), TD, ROOT).stamped() for ns, pid in CALLERS.items()}
    outbound_keys = sorted(str(key) for key in snap._memo if isinstance(key, tuple) and key[0] == "outbound")
    assert outbound_keys == [str(("outbound", TD, ROOT)), str(("outbound", TD, ROOT, "shop"))]  # exportTo's only
    monkeypatch.setattr(HostIndex, "rule_by_host", _old_rule_by_host)
    old_snap = Snapshot.build(resources(COMMON), CATALOG, Reuse())
    old = {ns: generate(old_snap, proxy_of(old_snap, pid), TD, ROOT).stamped() for ns, pid in CALLERS.items()}
    assert new == old
    assert sorted(map(str, old_snap._memo)) == sorted(map(str, snap._memo))
    assert sorted(map(str, old_snap.reuse._slots)) == sorted(map(str, snap.reuse._slots))


def test_a_client_namespace_rule_makes_a_class_of_its_namespace_only() -> None:
    snap = Snapshot.build(resources(ROUTE + rule("shop", 10) + rule("web", 20)), CATALOG)
    for proxy in snap.proxies:
        generate(snap, proxy, TD, ROOT)
    outbound_keys = sorted(str(key) for key in snap._memo if isinstance(key, tuple) and key[0] == "outbound")
    assert outbound_keys == [str(("outbound", TD, ROOT)), str(("outbound", TD, ROOT, "web"))]


STATES = [
    ROUTE + rule("shop", 10) + rule("web", 20),
    ROUTE + rule("shop", 10) + rule("web", 21),
    ROUTE + rule("shop", 10),
    ROUTE + rule("shop", 10) + rule(ROOT, 30),
    ROUTE + rule("web", 20) + rule(ROOT, 30),
    ROUTE + rule("shop", 10) + rule("web", 20),
]


def test_every_lookup_change_generates_what_a_fresh_pass_generates() -> None:
    reuse = Reuse()
    for config in STATES:
        carried = configs(config, [replace(i) for i in CATALOG], reuse)
        fresh = configs(config)
        for caller in CALLERS:
            assert carried[caller].stamped() == fresh[caller].stamped(), (config, caller)


def test_classes_taking_different_rules_keep_their_own_cluster_slots() -> None:
    """The web class and the others take different rules for one cluster: were the chosen rule not part of the
    slot, they would evict each other's cluster on every pass."""
    config = ROUTE + rule("shop", 10) + rule("web", 20) + rule(ROOT, 30)
    reuse = Reuse()
    configs(config, reuse=reuse)
    misses = reuse.misses
    again = configs(config, [replace(i) for i in CATALOG], reuse)
    assert reuse.misses == misses
    assert {caller: ejection(c) for caller, c in again.items()} == {"shop": 10, "web": 20, "ops": 10, ROOT: 30}
