"""ISM0022: a Sidecar ingress listener on a port none of the workloads it applies to fronts."""

from __future__ import annotations

from typing import Any

from services.galley.analyze import Catalog, analyze_messages
from services.galley.analyze_base import Workload
from shared.model import parse_resource

CATALOG = Catalog(
    services={"reviews": "shop", "orders": "shop"},
    workloads=(
        Workload("shop", {"app": "reviews", "version": "v1"}, frozenset({9080, 5432})),
        Workload("shop", {"app": "orders"}, frozenset({8080})),
        Workload("stock", {"app": "stock"}, frozenset({7000})),
    ),
)


def sidecar(ports: list[int], selector: dict[str, str] | None = None, namespace: str = "shop") -> Any:
    spec: dict[str, Any] = {"ingress": [{"port": {"number": port}} for port in ports]}
    if selector is not None:
        spec["workloadSelector"] = {"labels": selector}
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": "ingress", "namespace": namespace},
            "spec": spec,
        }
    )


def found(*resources: Any, catalog: Catalog | None = CATALOG) -> list[str]:
    return [str(m) for m in analyze_messages(list(resources), catalog=catalog) if m.code == "ISM0022"]


def test_a_port_the_selected_workloads_do_not_front_is_reported_with_the_ones_they_do() -> None:
    assert found(sidecar([9080, 8080], {"app": "reviews"})) == [
        "[ISM0022] Sidecar shop/ingress: spec.ingress[1].port.number: no workload it applies to fronts port 8080 "
        "(their app ports: 5432, 9080); the listener changes nothing"
    ]


def test_a_namespace_wide_sidecar_counts_every_workload_of_its_namespace() -> None:
    assert found(sidecar([8080, 5432])) == []
    assert len(found(sidecar([7000]))) == 1  # 7000 is fronted in another namespace only


def test_nothing_is_said_without_a_catalog_or_without_selected_workloads() -> None:
    assert found(sidecar([1]), catalog=None) == []
    assert found(sidecar([1], {"app": "nobody"})) == []
    assert found(sidecar([1], namespace="empty")) == []
