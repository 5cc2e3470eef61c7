"""VirtualService delegation in the model: `delegate` on a route, delegate VirtualServices without hosts, and
errors that name the exact field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.model import VirtualService, parse_resource


def _vs(**spec: Any) -> VirtualService:
    resource = parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "a", "namespace": "shop"},
            "spec": spec,
        }
    )
    assert isinstance(resource, VirtualService)
    return resource


def _errors(**spec: Any) -> dict[str, str]:
    """Field path below spec -> message."""
    with pytest.raises(ValidationError) as info:
        _vs(**spec)
    return {".".join(str(part) for part in error["loc"][1:]): error["msg"] for error in info.value.errors()}


ROUTE = {"route": [{"destination": {"host": "reviews"}}]}


def test_a_route_may_delegate_with_match_and_inherited_fields() -> None:
    vs = _vs(
        hosts=["reviews"],
        http=[
            {
                "match": [{"uri": {"prefix": "/api"}}],
                "timeout": "2s",
                "retries": {"attempts": 1},
                "delegate": {"name": "reviews-api", "namespace": "team"},
            },
            ROUTE,
        ],
    )
    delegating = vs.spec.http[0]
    assert delegating.delegate is not None
    assert (delegating.delegate.name, delegating.delegate.namespace) == ("reviews-api", "team")
    assert not vs.spec.is_delegate
    assert _vs(hosts=["r"], http=[{"delegate": {"name": "d"}}]).spec.http[0].delegate.namespace is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (ROUTE, "route"),
        ({"redirect": {"uri": "/x"}}, "redirect"),
        ({"directResponse": {"status": 204}}, "directResponse"),
    ],
)
def test_a_delegating_route_sets_no_destination(extra: dict[str, Any], named: str) -> None:
    errors = _errors(hosts=["r"], http=[{"delegate": {"name": "d"}, **extra}])
    assert list(errors) == ["http.0.delegate"]
    assert f"a delegating route must not set {named}" in errors["http.0.delegate"]


def test_a_delegate_needs_a_name() -> None:
    assert list(_errors(hosts=["r"], http=[{"delegate": {"namespace": "x"}}])) == ["http.0.delegate.name"]
    assert "at least 1 character" in _errors(hosts=["r"], http=[{"delegate": {"name": ""}}])["http.0.delegate.name"]


def test_a_virtual_service_without_hosts_is_a_delegate() -> None:
    vs = _vs(http=[{"match": [{"uri": {"prefix": "/api/v1"}}], **ROUTE}])
    assert vs.spec.is_delegate and vs.spec.hosts == []


def test_a_delegate_holds_http_routes_only_and_does_not_delegate_again() -> None:
    errors = _errors(
        gateways=["ingress"],
        tcp=[{"route": [{"destination": {"host": "db"}}]}],
        http=[ROUTE, {"delegate": {"name": "deeper"}}],
    )
    assert sorted(errors) == ["gateways", "http.1.delegate", "tcp"]
    assert "only one level of delegation" in errors["http.1.delegate"]
    assert "must not name gateways" in errors["gateways"]


def test_without_hosts_and_http_routes_hosts_is_missing() -> None:
    assert _errors() == {"hosts": "Field required"}
    assert "hosts" in _errors(tcp=[{"route": [{"destination": {"host": "db"}}]}])


def test_a_root_may_keep_gateways_and_tcp_and_hosts_stay_checked() -> None:
    vs = _vs(hosts=["r"], gateways=["g"], http=[{"delegate": {"name": "d"}}], tcp=[ROUTE])
    assert vs.spec.gateways == ["g"]
    assert "must be a non-empty name" in _errors(hosts=[" r"], http=[ROUTE])["hosts"]
