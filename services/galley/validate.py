"""Second step of galley's flow: documents -> typed resources, collecting every field and batch issue."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from services.galley.sources import Document, Source, parse_sources
from shared.model import KINDS, Resource, UnknownKind, parse_resource


@dataclass(frozen=True)
class Accepted:
    resource: Resource
    document: Document


UNKNOWN_KIND = "unknown"
Failure = tuple[str, str]
"""(kind, reason) of one validation issue, for metrics: a known kind or "unknown"; a short reason code
(`parse`, `unknown_kind`, `duplicate`, `empty`, or pydantic's error type such as `missing`)."""


@dataclass(frozen=True)
class BatchResult:
    """The batch's resources in input order, and every issue found; a batch with issues is stored nowhere."""

    accepted: tuple[Accepted, ...]
    errors: tuple[str, ...]
    failures: tuple[Failure, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def resources(self) -> list[Resource]:
        return [item.resource for item in self.accepted]


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REASONS = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
}


def format_loc(loc: Sequence[int | str]) -> str:
    """('spec', 'http', 1, 'route', 0, 'weight') -> 'spec.http[1].route[0].weight'; odd map keys quoted."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif "[" in part and part.endswith("]"):
            continue  # pydantic's own validator tag (e.g. function-after[...]), not part of the document
        elif _IDENTIFIER.match(part):
            text += f".{part}" if text else part
        else:
            text += f'["{part}"]'
    return text or "(document)"


def format_reason(error: ErrorDetails) -> str:
    reason = _REASONS.get(error["type"])
    if reason is not None:
        return reason
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def describe(document: Document) -> str:
    """'<source>: document <n> (<Kind> <namespace>/<name>)' from the raw data, tolerant of broken shapes."""
    data = document.data
    head = f"{document.source}: document {document.index}"
    if not isinstance(data, dict):
        return head
    kind = data.get("kind")
    metadata = data.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    namespace = metadata.get("namespace", "default")
    name = metadata.get("name", "?")
    return f"{head} ({kind if isinstance(kind, str) else '?'} {namespace}/{name})"


def validate_document(document: Document) -> tuple[Resource | None, list[str]]:
    resource, errors, _ = _validate(document)
    return resource, errors


def _validate(document: Document) -> tuple[Resource | None, list[str], list[Failure]]:
    head = describe(document)
    try:
        return parse_resource(document.data), [], []
    except UnknownKind as err:
        return None, [f"{head}: kind: {err}"], [(UNKNOWN_KIND, "unknown_kind")]
    except ValidationError as err:
        kind = _kind_of(document.data)
        details = err.errors()
        return (
            None,
            [f"{head}: {format_loc(e['loc'])}: {format_reason(e)}" for e in details],
            [(kind, e["type"]) for e in details],
        )


def _kind_of(data: Any) -> str:
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) and kind in KINDS else UNKNOWN_KIND


def check_batch(documents: Sequence[Document]) -> list[str]:
    """Issues across documents: the same resource (kind, namespace, name) given twice, valid or not."""
    errors: list[str] = []
    seen: dict[tuple[str, str, str], Document] = {}
    for document in documents:
        identity = document_identity(document.data)
        if identity is None:
            continue
        first = seen.setdefault(identity, document)
        if first is not document:
            where = f"{first.source} document {first.index}"
            errors.append(f"{describe(document)}: metadata: duplicate of the resource in {where}")
    return errors


def validate_documents(documents: Sequence[Document], errors: Sequence[str] = ()) -> BatchResult:
    """Validate every document and the batch as a whole; `errors` carries earlier (e.g. parse) issues."""
    all_errors = list(errors)
    failures: list[Failure] = [(UNKNOWN_KIND, "parse")] * len(errors)
    accepted: list[Accepted] = []
    for document in documents:
        resource, issues, found = _validate(document)
        all_errors.extend(issues)
        failures.extend(found)
        if resource is not None:
            accepted.append(Accepted(resource, document))
    duplicates = check_batch(documents)
    all_errors.extend(duplicates)
    failures.extend((UNKNOWN_KIND, "duplicate") for _ in duplicates)
    return BatchResult(tuple(accepted), tuple(all_errors), tuple(failures))


def validate_sources(sources: Sequence[Source]) -> BatchResult:
    documents, errors = parse_sources(list(sources))
    result = validate_documents(documents, errors)
    if not documents and not errors:
        return BatchResult((), ("no resources found in the given sources",), ((UNKNOWN_KIND, "empty"),))
    return result


def document_identity(data: Any) -> tuple[str, str, str] | None:
    """(kind, namespace, name) of a raw document without full validation (used by delete -f)."""
    if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict):
        return None
    kind, name = data.get("kind"), data["metadata"].get("name")
    namespace = data["metadata"].get("namespace", "default")
    if not all(isinstance(value, str) and value for value in (kind, name, namespace)):
        return None
    return str(kind), str(namespace), str(name)
