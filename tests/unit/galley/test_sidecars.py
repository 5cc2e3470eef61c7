"""Galley and the Sidecar kind: `isthmus get sidecars`, validation errors with the field path, and the
ISM0014 / ISM0015 findings about Sidecars competing for the same workloads."""

from __future__ import annotations

import yaml

from services.cli.config_cmds import render
from services.galley.analyze import analyze, analyze_messages
from services.galley.kinds import resolve_kind
from services.galley.sources import Source
from services.galley.validate import validate_sources
from shared.model import Resource, dump_resource, parse_resource


def sidecar(name: str, namespace: str = "shop", selector: str = "") -> str:
    selected = f"  workloadSelector: {{labels: {selector}}}\n" if selector else ""
    return (
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{selected}"
        "  egress:\n  - hosts: [./*, isthmus-system/*]\n---\n"
    )


def config(text: str) -> list[Resource]:
    return [parse_resource(doc) for doc in yaml.safe_load_all(text) if doc]


def test_kind_names() -> None:
    assert resolve_kind("sidecars") == resolve_kind("Sidecar") == resolve_kind("sidecar") == "Sidecar"


def test_get_shows_the_egress_hosts() -> None:
    [resource] = config(sidecar("default"))
    table = render("Sidecar", [dump_resource(resource)], "table")
    assert table.splitlines()[0].split() == ["NAMESPACE", "NAME", "REVISION", "EGRESS"]
    assert table.splitlines()[1].split() == ["shop", "default", "./*,isthmus-system/*"]


def test_one_sidecar_per_scope_is_quiet() -> None:
    text = sidecar("default") + sidecar("default", "stock") + sidecar("order", selector="{app: order}")
    assert analyze(config(text + sidecar("web", selector="{app: web}"))) == []


def test_several_namespace_wide_sidecars_are_reported() -> None:
    assert analyze(config(sidecar("b") + sidecar("a") + sidecar("c", "stock"))) == [
        "[ISM0014] namespace 'shop', the whole namespace (no workloadSelector): 2 Sidecars (Sidecar shop/a, "
        "Sidecar shop/b) apply; only Sidecar shop/a is used, keep one"
    ]


def test_several_sidecars_selecting_the_same_labels_are_reported() -> None:
    text = sidecar("x", selector="{app: order, version: v1}") + sidecar("y", selector="{version: v1, app: order}")
    [message] = analyze_messages(config(text + sidecar("z", selector="{app: order}")))
    assert message.code == "ISM0015"
    assert message.involved == {"Sidecar shop/x", "Sidecar shop/y"}
    assert "workloads with labels {'app': 'order', 'version': 'v1'}" in message.text


def test_validation_names_the_field_path() -> None:
    text = sidecar("default").replace("[./*, isthmus-system/*]", "[./*, reviews]")
    [error] = validate_sources([Source("sidecar.yaml", text)]).errors
    assert error.startswith(
        "sidecar.yaml: document 1 (Sidecar shop/default): spec.egress[0].hosts[1]: 'reviews': host must be of form "
        "namespace/dnsName"
    )
