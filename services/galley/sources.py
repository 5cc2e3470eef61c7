"""First step of galley's flow: read config sources (files, directories, stdin, request bodies) into documents."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

MAX_SOURCE_BYTES = 4 * 1024 * 1024
"""Largest single source accepted; protects galley and the CLI from runaway inputs."""

MAX_DOCUMENTS = 5000
"""Most documents one source may hold (empty ones count): a few KB of `---` lines must not cost minutes."""

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
STDIN_NAME = "-"


class SourceError(ValueError):
    """A source cannot be read or parsed; the message names the source and, where known, line and column."""


@dataclass(frozen=True)
class Source:
    """Raw text of one config source and the name used in every message about it."""

    name: str
    content: str


@dataclass(frozen=True)
class Document:
    """One decoded document of a source; `index` is 1-based and counts only non-empty documents' positions."""

    source: str
    index: int
    data: Any
    line: int = 1


def decode_text(name: str, raw: bytes) -> str:
    """Bytes -> text, enforcing the size limit and UTF-8."""
    check_size(name, len(raw))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SourceError(f"{name}: not valid UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})") from err


def check_size(name: str, size: int) -> None:
    if size > MAX_SOURCE_BYTES:
        raise SourceError(f"{name}: {size} bytes is larger than the {MAX_SOURCE_BYTES} byte limit per source")


def read_sources(location: str | Path, stdin: TextIO | None = None) -> list[Source]:
    """A file, every config file of a directory (sorted, not recursive), or stdin when location is '-'."""
    if str(location) == STDIN_NAME:
        stream = stdin if stdin is not None else sys.stdin
        raw = stream.buffer.read(MAX_SOURCE_BYTES + 1) if hasattr(stream, "buffer") else None
        if raw is not None:
            return [Source("stdin", decode_text("stdin", raw))]
        text = stream.read(MAX_SOURCE_BYTES + 1)
        check_size("stdin", len(text.encode("utf-8")))
        return [Source("stdin", text)]
    path = Path(location)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in CONFIG_SUFFIXES)
        if not files:
            raise SourceError(f"{path}: directory holds no {', '.join(CONFIG_SUFFIXES)} files")
        return [_read_file(p) for p in files]
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    return [_read_file(path)]


def _read_file(path: Path) -> Source:
    try:
        check_size(str(path), path.stat().st_size)
        raw = path.read_bytes()
    except OSError as err:
        raise SourceError(f"{path}: cannot read: {err.strerror or err}") from err
    return Source(str(path), decode_text(str(path), raw))


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, so "billion laughs" style documents cannot expand."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            mark = event.start_mark
            raise SourceError(
                f"line {mark.line + 1}, column {mark.column + 1}: YAML aliases (*{event.anchor}) "
                "are not accepted; write the value out in full"
            )
        return super().compose_node(parent, index)


def parse_source(source: Source) -> list[Document]:
    """Every non-empty document of a source, in order; JSON files are read as one JSON value."""
    check_size(source.name, len(source.content.encode("utf-8")))
    if source.name.lower().endswith(".json"):
        return _parse_json(source)
    return list(_parse_yaml(source))


def _parse_json(source: Source) -> list[Document]:
    try:
        data = json.loads(source.content)
    except json.JSONDecodeError as err:
        raise SourceError(f"{source.name}: line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}") from err
    except RecursionError as err:
        raise SourceError(f"{source.name}: JSON nested too deeply") from err
    return [] if data is None else [Document(source.name, 1, data)]


def _parse_yaml(source: Source) -> Iterator[Document]:
    loader = _NoAliasLoader(source.content)
    position = 0
    try:
        while loader.check_node():
            position += 1
            if position > MAX_DOCUMENTS:
                raise SourceError(f"more than {MAX_DOCUMENTS} documents in one source; split it")
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is not None:
                yield Document(source.name, position, data, node.start_mark.line + 1)
    except SourceError as err:
        raise SourceError(f"{source.name}: document {max(position, 1)}: {err}") from err
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = "; ".join(part for part in (err.context, err.problem) if part)
        raise SourceError(f"{source.name}: {where}YAML syntax error: {problem}") from err
    except yaml.YAMLError as err:
        raise SourceError(f"{source.name}: YAML error: {err}") from err
    except RecursionError as err:
        raise SourceError(f"{source.name}: document {position}: nested too deeply") from err
    finally:
        loader.dispose()


def parse_sources(sources: list[Source]) -> tuple[list[Document], list[str]]:
    """All documents of all sources, plus one message per source that failed (other sources still parse)."""
    documents: list[Document] = []
    errors: list[str] = []
    for source in sources:
        try:
            documents.extend(parse_source(source))
        except SourceError as err:
            errors.append(str(err))
    return documents, errors
