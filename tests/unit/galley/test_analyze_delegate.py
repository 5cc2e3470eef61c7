"""Delegation findings: ISM0012 a route delegating to no delegate, ISM0013 a delegate no route names; a delegate's
missing hosts raise no ISM0002, and validation names the delegate field."""

from __future__ import annotations

import yaml

from services.galley.analyze import Catalog, analyze, analyze_messages
from services.galley.sources import Source
from services.galley.validate import validate_sources
from shared.model import Resource, parse_resource

ROOT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api}}]
    delegate: {name: reviews-api}
  - match: [{uri: {prefix: /ratings}}]
    delegate: {name: ratings-routes, namespace: team}
  - route: [{destination: {host: reviews}}]
---
"""
API = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-api, namespace: shop}
spec:
  http:
  - route: [{destination: {host: reviews}}]
---
"""
RATINGS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-routes, namespace: team}
spec:
  http:
  - route: [{destination: {host: ratings}}]
---
"""


def config(text: str) -> list[Resource]:
    return [parse_resource(doc) for doc in yaml.safe_load_all(text) if doc]


def test_root_and_delegates_in_place_are_quiet() -> None:
    assert analyze(config(ROOT + API + RATINGS)) == []


def test_a_missing_delegate_is_reported_on_the_root_route() -> None:
    assert analyze(config(ROOT + API)) == [
        "[ISM0012] VirtualService shop/reviews: spec.http[1].delegate: VirtualService team/ratings-routes does not "
        "exist; pilot drops this route, so the requests it matches go to the next route"
    ]


def test_the_delegate_namespace_defaults_to_the_root_namespace() -> None:
    elsewhere = API.replace("namespace: shop", "namespace: team")
    codes = [message.code for message in analyze_messages(config(ROOT + elsewhere + RATINGS))]
    assert codes == ["ISM0012", "ISM0013"]  # shop/reviews-api is missing; team/reviews-api is named by nobody


def test_a_delegate_with_hosts_is_no_delegate() -> None:
    with_hosts = API.replace("spec:\n", "spec:\n  hosts: [details]\n")
    [message] = analyze_messages(config(ROOT + with_hosts + RATINGS))
    assert message.code == "ISM0012"
    assert "VirtualService shop/reviews-api has hosts, so it is not a delegate" in message.text
    assert message.involved == {"VirtualService shop/reviews", "VirtualService shop/reviews-api"}


def test_a_delegate_no_route_names_is_reported() -> None:
    assert analyze(config(API)) == [
        "[ISM0013] VirtualService shop/reviews-api: spec.hosts: without hosts this is a delegate VirtualService, "
        "and no route delegates to it (delegate: {name: reviews-api, namespace: shop}), so it routes nothing"
    ]


def test_focus_keeps_the_findings_involving_the_focus() -> None:
    everything = config(ROOT + API)
    root, api = everything
    assert [m.code for m in analyze_messages(everything, focus=[api])] == []
    assert [m.code for m in analyze_messages(everything, focus=[root])] == ["ISM0012"]


def test_a_delegate_without_hosts_raises_no_unknown_host() -> None:
    catalog = Catalog(services={"reviews": "shop", "ratings": "team"})
    assert analyze_messages(config(ROOT + API + RATINGS), catalog=catalog) == []
    unknown = analyze_messages(config(ROOT + API + RATINGS.replace("host: ratings", "host: nowhere")), catalog=catalog)
    assert [(m.code, m.text.split(": host")[0]) for m in unknown] == [
        ("ISM0002", "VirtualService team/ratings-routes: spec.http[0].route[0].destination.host")
    ]


def test_validation_names_the_delegate_field() -> None:
    text = ROOT.replace(
        "    delegate: {name: reviews-api}\n", "    delegate: {name: reviews-api}\n    redirect: {uri: /x}\n"
    )
    [error] = validate_sources([Source("vs.yaml", text)]).errors
    assert error.startswith(
        "vs.yaml: document 1 (VirtualService shop/reviews): spec.http[0].delegate: a delegating route must not set "
        "redirect"
    )
    nested = API.replace("  - route: [{destination: {host: reviews}}]\n", "  - delegate: {name: deeper}\n")
    [error] = validate_sources([Source("vs.yaml", nested)]).errors
    assert error.endswith(
        "spec.http[0].delegate: a delegate VirtualService (no hosts) cannot delegate again: only one level of "
        "delegation"
    )
