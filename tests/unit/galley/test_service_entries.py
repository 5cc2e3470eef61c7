"""ServiceEntry in galley: kind names, validation messages with paths, and the cross-resource findings."""

from __future__ import annotations

from typing import Any

import pytest

from services.cli import config_cmds
from services.galley.analyze import Catalog, analyze_messages
from services.galley.kinds import resolve_kind
from services.galley.sources import Source
from services.galley.validate import validate_sources
from shared.model import Resource, parse_resource

CATALOG = Catalog(services={"reviews": "shop", "db": "shop"}, tcp_services=frozenset({"db"}))


def se(name: str, hosts: list[str], namespace: str = "shop", **spec: Any) -> Resource:
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "hosts": hosts,
                "ports": [{"number": 443, "name": "https", "protocol": "HTTPS"}],
                "resolution": "DNS",
                **spec,
            },
        }
    )


def vs(name: str, hosts: list[str], destination: str, tcp: bool = False) -> Resource:
    routes = [{"route": [{"destination": {"host": destination}}]}]
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"hosts": hosts, ("tcp" if tcp else "http"): routes},
        }
    )


def dr(name: str, host: str, **policy: Any) -> Resource:
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"host": host, **policy},
        }
    )


@pytest.mark.parametrize("text", ["se", "SE", "serviceentry", "ServiceEntries", "serviceentries"])
def test_kind_names(text: str) -> None:
    assert resolve_kind(text) == "ServiceEntry"


def test_get_lists_hosts() -> None:
    item = {"kind": "ServiceEntry", "metadata": {"namespace": "shop", "name": "ext", "resourceVersion": "4"}}
    item["spec"] = {"hosts": ["api.example.com", "maps.example.com"]}
    assert config_cmds.render("ServiceEntry", [item], "table").splitlines() == [
        "NAMESPACE   NAME   REVISION   HOSTS",
        "shop        ext    4          api.example.com,maps.example.com",
    ]


def test_validation_messages_name_the_field_path() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: ['*.example.com']
  addresses: [10.1.0.0/16]
  ports: [{number: 443, name: https, protocol: HTTPS}]
"""
    result = validate_sources([Source("ext.yaml", text)])
    head = "ext.yaml: document 1 (ServiceEntry shop/ext)"
    assert not result.ok
    assert list(result.errors) == [
        f"{head}: spec.hosts[0]: '*.example.com': wildcard hosts need resolution NONE (forwarding to whatever "
        "address the app dialed), which Isthmus does not support; list each host name",
        f"{head}: spec.addresses: addresses need transparent traffic capture, which Isthmus does not do; call the "
        "host name through the sidecar",
        f"{head}: spec.resolution: not set, and Istio's default NONE is not supported: set STATIC (endpoints with IP "
        "addresses) or DNS / DNS_ROUND_ROBIN (resolved when connecting)",
    ]


def codes(resources: list[Resource], catalog: Catalog | None = CATALOG) -> list[str]:
    return [str(message) for message in analyze_messages(resources, catalog=catalog)]


def test_entry_hosts_are_known_hosts() -> None:
    resources = [
        se("api", ["api.example.com", "maps.example.com"]),
        vs("api", ["api.example.com"], "api.example.com"),
        vs("wild", ["*.example.com"], "maps.example.com"),
        vs("db", ["db"], "api.example.com", tcp=True),
        dr("api", "api.example.com"),
    ]
    assert codes(resources) == []
    assert codes([vs("api", ["api.example.com"], "api.example.com")]) == [
        "[ISM0002] VirtualService shop/api: spec.hosts[0]: host 'api.example.com' is not a service in the Consul "
        "catalog",
        "[ISM0002] VirtualService shop/api: spec.http[0].route[0].destination.host: host 'api.example.com' is not a "
        "service in the Consul catalog",
    ]


def test_a_host_declared_twice_names_the_entry_used() -> None:
    found = codes([se("b", ["api.example.com"], namespace="web"), se("a", ["api.example.com"])], catalog=None)
    assert found == [
        "[ISM0009] host 'api.example.com' is declared by 2 ServiceEntries (ServiceEntry shop/a, ServiceEntry web/b); "
        "only ServiceEntry shop/a is used"
    ]


def test_an_entry_host_the_catalog_holds_is_reported() -> None:
    found = codes([se("clash", ["api.example.com", "reviews.shop.svc.cluster.local"])])
    assert found == [
        "[ISM0010] ServiceEntry shop/clash: spec.hosts[1]: 'reviews.shop.svc.cluster.local' is a name of catalog "
        "service 'reviews', which keeps it: this host of the ServiceEntry is not used"
    ]


def test_istio_mutual_towards_a_mesh_external_host_is_reported() -> None:
    mutual = {"tls": {"mode": "ISTIO_MUTUAL"}}
    rule = dr("api", "api.example.com", subsets=[{"name": "v1", "trafficPolicy": mutual}])
    found = analyze_messages([se("api", ["api.example.com"]), rule])
    assert [(m.code, m.involved) for m in found] == [
        ("ISM0011", frozenset({"DestinationRule shop/api", "ServiceEntry shop/api"}))
    ]
    assert "spec.subsets[0].trafficPolicy.tls.mode: ISTIO_MUTUAL towards 'api.example.com'" in found[0].text
    internal = se("api", ["api.example.com"], location="MESH_INTERNAL")
    assert analyze_messages([internal, dr("api", "api.example.com", trafficPolicy=mutual)]) == []


def we(name: str, labels: dict[str, str], namespace: str = "shop") -> Resource:
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"address": "192.0.2.40", "labels": labels},
        }
    )


def test_a_workload_selector_choosing_no_workload_entry_is_reported() -> None:
    selecting = se("legacy", ["legacy.example.com"], workloadSelector={"labels": {"app": "legacy"}})
    elsewhere = we("vm-1", {"app": "legacy"}, namespace="default")
    texts = [
        str(m) for m in analyze_messages([selecting, elsewhere, we("vm-2", {"app": "other"})]) if m.code == "ISM0018"
    ]
    assert texts == [
        "[ISM0018] ServiceEntry shop/legacy: spec.workloadSelector (app=legacy) chooses no WorkloadEntry in "
        "namespace 'shop': hosts legacy.example.com have no endpoints (503 UH) until one is applied"
    ]
    chosen = we("vm-3", {"app": "legacy", "version": "v1"})
    assert not [m for m in analyze_messages([selecting, chosen]) if m.code == "ISM0018"]
    assert resolve_kind("we") == resolve_kind("workloadentries") == "WorkloadEntry"


def test_a_workload_entry_nothing_chooses_or_with_an_undeclared_port_name_is_reported() -> None:
    selecting = se("legacy", ["legacy.example.com"], workloadSelector={"labels": {"app": "legacy"}})
    chosen = parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {"name": "vm-1", "namespace": "shop"},
            "spec": {"address": "192.0.2.40", "labels": {"app": "legacy"}, "ports": {"https": 8443, "admin": 9000}},
        }
    )
    orphan = we("vm-2", {"app": "billing"})
    texts = [str(m) for m in analyze_messages([selecting, chosen, orphan]) if m.code == "ISM0019"]
    assert texts == [
        "[ISM0019] WorkloadEntry shop/vm-1: spec.ports.admin: no ServiceEntry that chooses it (ServiceEntry "
        "shop/legacy) declares a port named 'admin'; the mapping is not used",
        "[ISM0019] WorkloadEntry shop/vm-2: no ServiceEntry's workloadSelector in namespace 'shop' chooses it, so it "
        "receives no traffic",
    ]
