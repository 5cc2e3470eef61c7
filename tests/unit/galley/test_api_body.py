"""The apply request body: the sources form, raw YAML, and clear refusals of malformed requests."""

from __future__ import annotations

import json

import pytest

from services.galley.api import BadRequest, parse_apply_body
from services.galley.sources import Source


def body(data: object) -> bytes:
    return json.dumps(data).encode()


def test_sources_form() -> None:
    sources, dry_run = parse_apply_body(
        body({"sources": [{"name": "a.yaml", "content": "x: 1"}], "dryRun": True}), "application/json", None
    )
    assert (sources, dry_run) == ([Source("a.yaml", "x: 1")], True)


def test_raw_yaml_and_raw_json_resource_are_one_source_named_request() -> None:
    assert parse_apply_body(b"kind: X\n", "application/yaml", "true") == ([Source("request", "kind: X\n")], True)
    raw = body({"kind": "VirtualService"})
    assert parse_apply_body(raw, "application/json", None) == ([Source("request", raw.decode())], False)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sources": []}, "sources: expected a non-empty list of {name, content}"),
        ({"sources": "a"}, "sources: expected a non-empty list of {name, content}"),
        ({"sources": [{"name": "a", "content": 1}]}, "sources[0]: name and content must be strings"),
        ({"sources": [{"name": "a", "content": "", "x": 1}]}, "sources[0]: expected exactly the fields"),
        ({"sources": [{"name": "a", "content": ""}], "dryRun": "yes"}, "dryRun: expected true or false"),
        ({"sources": [{"name": "a", "content": ""}], "force": True}, "unknown request field(s): force"),
    ],
)
def test_malformed_sources_form(data: object, message: str) -> None:
    with pytest.raises(BadRequest, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_apply_body(body(data), "application/json", None)


def test_bad_json_and_bad_query_flag() -> None:
    with pytest.raises(BadRequest, match="request body is not valid JSON: line 1"):
        parse_apply_body(b"{", "application/json", None)
    with pytest.raises(BadRequest, match="dryRun: expected true or false, got 'maybe'"):
        parse_apply_body(b"a: 1", "application/yaml", "maybe")


def test_unnamed_source_gets_its_position_as_name() -> None:
    sources, _ = parse_apply_body(body({"sources": [{"name": "", "content": "a: 1"}]}), "application/json", None)
    assert sources == [Source("sources[0]", "a: 1")]
