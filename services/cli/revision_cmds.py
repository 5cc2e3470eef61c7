"""`isthmus history` and `isthmus rollback`: a resource's kept revisions in the config bucket, through galley."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from services.cli.config_cmds import (
    DEFAULT_NAMESPACE,
    EXIT_OK,
    EXIT_UNREACHABLE,
    KIND_HELP,
    GalleyRejected,
    GalleyUnreachable,
    _add_galley_flag,
    _client,
    _fail,
)
from services.galley.kinds import resolve_kind
from shared.model import UnknownKind


def _summary(item: dict[str, Any]) -> str:
    resource = item.get("resource")
    if resource is None:
        return "(deleted)"
    spec = json.dumps(resource.get("spec", {}), sort_keys=True, separators=(",", ":"))
    return spec if len(spec) <= 80 else spec[:77] + "..."


def format_history(items: list[dict[str, Any]]) -> str:
    rows = [("REVISION", "OPERATION", "WRITTEN (UTC)", "SPEC")]
    for item in items:
        created = item.get("created")
        when = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d %H:%M:%S") if created else "-"
        rows.append((str(item["revision"]), str(item["operation"]), when, _summary(item)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def history_command(args: argparse.Namespace) -> int:
    try:
        kind = resolve_kind(args.kind)
        items = _client(args).history(kind, args.namespace, args.name)
    except UnknownKind as err:
        return _fail(str(err))
    except GalleyRejected as err:
        return _fail(*err.messages)
    except GalleyUnreachable as err:
        return _fail(str(err), code=EXIT_UNREACHABLE)
    print(json.dumps({"history": items}, indent=2) if args.output == "json" else format_history(items))
    return EXIT_OK


def rollback_command(args: argparse.Namespace) -> int:
    try:
        kind = resolve_kind(args.kind)
        answer = _client(args).rollback(kind, args.namespace, args.name, args.to)
    except UnknownKind as err:
        return _fail(str(err))
    except GalleyRejected as err:
        return _fail(*err.messages)
    except GalleyUnreachable as err:
        return _fail(str(err), code=EXIT_UNREACHABLE)
    result = answer["rolledBack"]
    print(
        f"{result['kind']} {result['namespace']}/{result['name']} rolled back to revision {args.to}: "
        f"{result['action']} (now revision {result['revision']})"
    )
    return EXIT_OK


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--to {text}: a revision is a positive number")
    return value


def register(subparsers: Any) -> None:
    history = subparsers.add_parser("history", help="show the kept revisions of one resource")
    history.add_argument("kind", metavar="KIND", help=KIND_HELP)
    history.add_argument("name", metavar="NAME")
    history.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE, help="namespace (default %(default)s)")
    history.add_argument("-o", "--output", choices=("table", "json"), default="table")
    _add_galley_flag(history)
    history.set_defaults(handler=history_command)

    rollback = subparsers.add_parser("rollback", help="store a resource as it was at an earlier revision")
    rollback.add_argument("kind", metavar="KIND", help=KIND_HELP)
    rollback.add_argument("name", metavar="NAME")
    rollback.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE, help="namespace (default %(default)s)")
    rollback.add_argument("--to", type=_positive, required=True, metavar="REV", help="revision (see isthmus history)")
    _add_galley_flag(rollback)
    rollback.set_defaults(handler=rollback_command)
