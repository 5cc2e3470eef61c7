"""`isthmus analyze` on VirtualService tcp routes: undefined subsets, unknown hosts, services not declared TCP."""

from __future__ import annotations

from typing import Any

from services.galley.analyze import Catalog, analyze, analyze_messages
from shared.model import Resource, parse_resource


def tcp_vs(name: str, hosts: list[str], routes: list[dict[str, Any]]) -> Resource:
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "data"},
            "spec": {"hosts": hosts, "tcp": [{"route": routes}]},
        }
    )


def dr(host: str, subsets: list[str]) -> Resource:
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": host, "namespace": "data"},
            "spec": {"host": host, "subsets": [{"name": s, "labels": {"version": s}} for s in subsets]},
        }
    )


CATALOG = Catalog(services={"db": "data", "web": "data"}, tcp_services=frozenset({"db"}))


def test_a_tcp_route_to_an_undefined_subset() -> None:
    config = [
        tcp_vs("db", ["db"], [{"destination": {"host": "db", "subset": "v1"}, "weight": 90},
                              {"destination": {"host": "db", "subset": "v2"}, "weight": 10}]),
        dr("db", ["v1"]),
    ]  # fmt: skip
    assert analyze(config) == [
        "[ISM0001] VirtualService data/db: spec.tcp[0].route[1].destination.subset: subset 'v2' of host 'db' is "
        "not defined by any DestinationRule; connections routed there are closed until one defines it"
    ]


def test_a_tcp_route_whose_weights_are_all_zero() -> None:
    config = [tcp_vs("db", ["db"], [{"destination": {"host": "db"}, "weight": 0},
                                    {"destination": {"host": "db"}, "weight": 0}])]  # fmt: skip
    assert [message.code for message in analyze_messages(config)] == ["ISM0005"]


def test_a_tcp_route_to_a_host_not_in_the_catalog() -> None:
    config = [tcp_vs("db", ["db"], [{"destination": {"host": "replica"}}])]
    assert [str(m) for m in analyze_messages(config, catalog=CATALOG)] == [
        "[ISM0002] VirtualService data/db: spec.tcp[0].route[0].destination.host: host 'replica' is not a "
        "service in the Consul catalog"
    ]


def test_a_tcp_route_to_or_for_a_service_not_declared_tcp() -> None:
    config = [tcp_vs("web", ["web.data.svc.cluster.local"], [{"destination": {"host": "web"}}])]
    messages = analyze_messages(config, catalog=CATALOG)
    assert [m.code for m in messages] == ["ISM0008", "ISM0008"]
    assert str(messages[0]) == (
        "[ISM0008] VirtualService data/web: spec.hosts[0]: service 'web' is not declared TCP (Consul Meta "
        "isthmus-protocol=tcp; `isthmus proxy run --protocol tcp` or `--extra-port N:tcp`), so this tcp route is never "
        "used"
    )
    assert "spec.tcp[0].route[0].destination.host" in str(messages[1])


def test_a_correct_tcp_route_is_quiet() -> None:
    config = [tcp_vs("db", ["db"], [{"destination": {"host": "db.data", "subset": "v1", "port": {"number": 5432}}}]),
              dr("db", ["v1"])]  # fmt: skip
    assert analyze_messages(config, catalog=CATALOG) == []
    assert analyze_messages(config) == []
