"""`exportTo` of VirtualService, DestinationRule and ServiceEntry: what is accepted, what is refused and where."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.model import Resource, parse_resource
from shared.model.export_to import audience, restricts, seen_together, visible_to

SPECS: dict[str, dict[str, Any]] = {
    "VirtualService": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
    "DestinationRule": {"host": "reviews"},
    "ServiceEntry": {
        "hosts": ["api.example.com"],
        "resolution": "DNS",
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
    },
}


def build(kind: str, export_to: Any) -> Resource:
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": kind,
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {**SPECS[kind], "exportTo": export_to},
        }
    )


def format_loc(loc: tuple[int | str, ...]) -> str:
    """('spec', 'exportTo', 1) -> 'spec.exportTo[1]', as galley reports it."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def refusal(kind: str, export_to: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        build(kind, export_to)
    return {format_loc(error["loc"]): error["msg"] for error in caught.value.errors()}


@pytest.mark.parametrize("kind", sorted(SPECS))
@pytest.mark.parametrize("export_to", [[], ["*"], ["."], ["ops"], [".", "ops", "jobs"]])
def test_istio_values_are_accepted(kind: str, export_to: list[str]) -> None:
    resource = build(kind, export_to)
    assert resource.spec.export_to == export_to  # type: ignore[union-attr]


def test_only_a_service_entry_may_be_exported_to_no_namespace() -> None:
    assert build("ServiceEntry", ["~"]).spec.export_to == ["~"]  # type: ignore[union-attr]
    for kind in ("VirtualService", "DestinationRule"):
        assert "is only for a ServiceEntry" in refusal(kind, ["~"])["spec.exportTo"]


@pytest.mark.parametrize("kind", sorted(SPECS))
@pytest.mark.parametrize(
    ("export_to", "path", "message"),
    [
        ([".", "Ops"], "spec.exportTo[1]", "'Ops' is not '.', '*' or a namespace name"),
        (["*", "ops"], "spec.exportTo", "'*' (exportTo[0], every namespace) cannot be combined"),
        (["ops", "*"], "spec.exportTo", "'*' (exportTo[1], every namespace) cannot be combined"),
        (["ops", "ops"], "spec.exportTo", "'ops' is listed twice (exportTo[0] and exportTo[1])"),
        (["a" * 64], "spec.exportTo[0]", "is not '.', '*' or a namespace name"),
        ([""], "spec.exportTo[0]", "is not '.', '*' or a namespace name"),
    ],
)
def test_refusals_name_the_entry(kind: str, export_to: list[str], path: str, message: str) -> None:
    found = refusal(kind, export_to)
    assert message in found[path], found


def test_no_namespace_cannot_be_combined_with_others() -> None:
    found = refusal("ServiceEntry", ["~", "."])
    assert "'~' (exportTo[0], no namespace) cannot be combined" in found["spec.exportTo"]


def test_visibility() -> None:
    assert not restricts([]) and not restricts(["*"])
    assert restricts(["."]) and restricts(["~"]) and restricts(["ops"])
    assert audience([".", "ops"], "shop") == {"shop", "ops"}
    assert audience(["~"], "shop") == frozenset()
    assert visible_to([], "shop", "ops") and visible_to(["*"], "shop", "ops")
    assert visible_to(["."], "shop", "shop") and not visible_to(["."], "shop", "ops")
    assert visible_to(["ops"], "shop", "ops") and not visible_to(["ops"], "shop", "shop")
    assert not visible_to(["~"], "shop", "shop")


def test_seen_together_when_some_caller_namespace_sees_both() -> None:
    assert seen_together(([], "shop"), (["*"], "web"))
    assert seen_together((["."], "shop"), ([], "web"))
    assert seen_together((["."], "shop"), (["shop"], "web"))
    assert not seen_together((["."], "shop"), (["."], "web"))
    assert not seen_together((["~"], "shop"), ([], "web"))
