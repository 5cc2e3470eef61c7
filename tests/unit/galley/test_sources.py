"""Reading config sources: documents keep their source and index; syntax errors, bombs and bad bytes are refused."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from services.galley.sources import (
    MAX_SOURCE_BYTES,
    Source,
    SourceError,
    decode_text,
    parse_source,
    parse_sources,
    read_sources,
)

BILLION_LAUGHS = """
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
"""


def test_documents_keep_source_and_position_and_skip_empty_ones() -> None:
    docs = parse_source(Source("mesh.yaml", "a: 1\n---\n---\n# only a comment\n---\nb: 2\n"))
    assert [(d.source, d.index, d.data) for d in docs] == [("mesh.yaml", 1, {"a": 1}), ("mesh.yaml", 4, {"b": 2})]
    assert docs[1].line == 6


def test_yaml_syntax_error_names_file_line_and_column() -> None:
    with pytest.raises(SourceError) as info:
        parse_source(Source("canary.yaml", "kind: VirtualService\nmetadata:\n  name: [a, b\n"))
    message = str(info.value)
    assert message.startswith("canary.yaml: line 4, column 1: YAML syntax error")
    assert "flow sequence" in message


def test_alias_bomb_is_refused_before_expansion() -> None:
    with pytest.raises(SourceError, match=r"bomb.yaml: document 1: line 3, column 8: YAML aliases \(\*a\)"):
        parse_source(Source("bomb.yaml", BILLION_LAUGHS))


def test_single_alias_is_refused_too() -> None:
    with pytest.raises(SourceError, match="aliases"):
        parse_source(Source("x.yaml", "base: &b {host: a}\nother: *b\n"))


def test_non_utf8_bytes_are_refused_with_offset() -> None:
    with pytest.raises(SourceError, match=r"latin.yaml: not valid UTF-8 text \(byte 0xe9 at offset 6\)"):
        decode_text("latin.yaml", "name: caf\u00e9".encode("latin-1")[:6] + b"\xe9")


def test_oversized_source_is_refused() -> None:
    with pytest.raises(SourceError, match="larger than"):
        parse_source(Source("big.yaml", "a" * (MAX_SOURCE_BYTES + 1)))


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(SourceError, match="nested too deeply"):
        parse_source(Source("deep.yaml", "[" * 50_000))


def test_json_file_error_names_line() -> None:
    with pytest.raises(SourceError, match=r"vs.json: line 2, column 2: invalid JSON: Extra data"):
        parse_source(Source("vs.json", '{"a": 1\n}x'))
    assert parse_source(Source("vs.json", '{"a": [1]}'))[0].data == {"a": [1]}


def test_directory_is_read_sorted_and_filtered(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text("b: 1\n")
    (tmp_path / "a.yaml").write_text("a: 1\n")
    (tmp_path / "c.json").write_text('{"c": 1}')
    (tmp_path / "notes.txt").write_text("ignored")
    names = [Path(s.name).name for s in read_sources(tmp_path)]
    assert names == ["a.yaml", "b.yml", "c.json"]


def test_missing_path_and_non_utf8_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or directory"):
        read_sources(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: \xff\n")
    with pytest.raises(SourceError, match=r"bad.yaml: not valid UTF-8"):
        read_sources(bad)


def test_stdin_source() -> None:
    (source,) = read_sources("-", stdin=io.StringIO("a: 1\n"))
    assert source == Source("stdin", "a: 1\n")


def test_parse_sources_reports_every_broken_source_and_keeps_the_rest() -> None:
    docs, errors = parse_sources([Source("ok.yaml", "a: 1"), Source("x.yaml", "a: [")])
    assert [d.data for d in docs] == [{"a": 1}]
    assert len(errors) == 1 and errors[0].startswith("x.yaml: line")


def test_too_many_documents_are_refused_with_the_limit() -> None:
    from services.galley.sources import MAX_DOCUMENTS

    with pytest.raises(SourceError, match=f"more than {MAX_DOCUMENTS} documents in one source"):
        parse_source(Source("many.yaml", "---\n{}\n" * (MAX_DOCUMENTS + 1)))
    assert len(parse_source(Source("ok.yaml", "---\n{a: 1}\n" * 10))) == 10
