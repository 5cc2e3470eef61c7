"""`isthmus apply / get / delete`: the CLI side of config changes, talking to galley's HTTP API."""

from __future__ import annotations

import argparse
import builtins
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

import yaml

from services.galley.kinds import kind_names, resolve_kind
from services.galley.sources import Source, SourceError, parse_sources, read_sources
from services.galley.validate import document_identity
from shared.model import UnknownKind
from shared.ports import DEFAULT_GALLEY_URL, GALLEY_URL_ENV

EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 2
DEFAULT_NAMESPACE = "default"


class GalleyUnreachable(Exception):
    """Galley (or the store behind it) cannot be reached; the CLI exits with EXIT_UNREACHABLE."""


class GalleyRejected(Exception):
    """Galley answered with an error status; `messages` are its reasons."""

    def __init__(self, status: int, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.status = status
        self.messages = messages


class GalleyClient:
    """Blocking JSON client of galley's /v1 API."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as err:
            messages = _error_messages(err)
            if err.code in (502, 503, 504):
                raise GalleyUnreachable(f"galley at {self.base_url}: {'; '.join(messages)}") from err
            raise GalleyRejected(err.code, messages) from err
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise GalleyUnreachable(f"cannot reach galley at {self.base_url} ({reason})") from err

    def apply(self, sources: Sequence[Source], dry_run: bool = False) -> dict[str, Any]:
        """Galley's answer: {"applied": [{kind, namespace, name, action, revision}], "warnings": [...]}."""
        body = {"sources": [{"name": s.name, "content": s.content} for s in sources], "dryRun": dry_run}
        return dict(self._call("POST", "/v1/apply", body))

    def list(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        query = {"kind": kind} | ({"namespace": namespace} if namespace else {})
        return list(self._call("GET", "/v1/resources?" + urllib.parse.urlencode(query))["items"])

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return dict(self._call("GET", _resource_path(kind, namespace, name)))

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._call("DELETE", _resource_path(kind, namespace, name))

    def history(self, kind: str, namespace: str, name: str) -> builtins.list[dict[str, Any]]:
        """Kept revisions, oldest first: [{revision, operation, created, resource}]."""
        path = "/v1/history/" + _resource_path(kind, namespace, name).removeprefix("/v1/resources/")
        return list(self._call("GET", path)["history"])

    def rollback(self, kind: str, namespace: str, name: str, revision: int) -> dict[str, Any]:
        path = "/v1/rollback/" + _resource_path(kind, namespace, name).removeprefix("/v1/resources/")
        return dict(self._call("POST", path, {"revision": revision}))


def _resource_path(kind: str, namespace: str, name: str) -> str:
    quote = urllib.parse.quote
    return f"/v1/resources/{quote(kind, safe='')}/{quote(namespace, safe='')}/{quote(name, safe='')}"


def _error_messages(err: urllib.error.HTTPError) -> list[str]:
    try:
        messages = json.loads(err.read())["errors"]
        return [str(message) for message in messages]
    except (ValueError, KeyError, TypeError):
        return [f"HTTP {err.code} {err.reason}"]


def _fail(*messages: str, code: int = EXIT_FAILED) -> int:
    for message in messages:
        print(f"error: {message}", file=sys.stderr)
    return code


def _client(args: argparse.Namespace) -> GalleyClient:
    return GalleyClient(args.galley)


def _read_all(locations: Sequence[str]) -> list[Source]:
    sources: list[Source] = []
    for location in locations:
        sources.extend(read_sources(location))
    return sources


def apply_command(args: argparse.Namespace) -> int:
    try:
        sources = _read_all(args.filenames)
        applied = _client(args).apply(sources, dry_run=args.dry_run)
    except SourceError as err:
        return _fail(str(err))
    except GalleyRejected as err:
        return _fail(*err.messages)
    except GalleyUnreachable as err:
        return _fail(str(err), code=EXIT_UNREACHABLE)
    suffix = " (dry run)" if args.dry_run else ""
    for item in applied["applied"]:
        print(f"{item['kind']} {item['namespace']}/{item['name']} {item['action']}{suffix}")
    for warning in applied.get("warnings", []):
        print(f"Warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _summary(resource: dict[str, Any]) -> str:
    spec = resource.get("spec", {})
    kind = resource.get("kind")
    if kind in ("VirtualService", "ServiceEntry"):
        return ",".join(spec.get("hosts", []))
    if kind == "DestinationRule":
        return str(spec.get("host", ""))
    if kind == "PeerAuthentication":
        return str(spec.get("mtls", {}).get("mode", "UNSET"))
    if kind == "AuthorizationPolicy":
        return str(spec.get("action", "ALLOW"))
    if kind == "Gateway":
        return ",".join(
            f"{server.get('port', {}).get('protocol', '')}/{server.get('port', {}).get('number', '')}"
            for server in spec.get("servers", [])
        )
    if kind == "Sidecar":
        return ",".join(host for listener in spec.get("egress", []) for host in listener.get("hosts", []))
    return ""


_SUMMARY_TITLE = {
    "VirtualService": "HOSTS",
    "DestinationRule": "HOST",
    "ServiceEntry": "HOSTS",
    "PeerAuthentication": "MODE",
    "AuthorizationPolicy": "ACTION",
    "Sidecar": "EGRESS",
    "Gateway": "SERVERS",
}


def render(kind: str, items: list[dict[str, Any]], output: str, single: bool = False) -> str:
    """Resources as a table (namespace, name, revision, a kind-specific column), YAML documents or JSON."""
    if output == "json":
        return json.dumps(items[0] if single else {"items": items}, indent=2)
    if output == "yaml":
        return "---\n".join(yaml.safe_dump(item, sort_keys=False) for item in items).rstrip("\n")
    rows = [["NAMESPACE", "NAME", "REVISION", _SUMMARY_TITLE.get(kind, "")]]
    for item in items:
        meta = item.get("metadata", {})
        rows.append([meta.get("namespace", ""), meta.get("name", ""), meta.get("resourceVersion", ""), _summary(item)])
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def get_command(args: argparse.Namespace) -> int:
    try:
        kind = resolve_kind(args.kind)
        client = _client(args)
        if args.name:
            items = [client.get(kind, args.namespace or DEFAULT_NAMESPACE, args.name)]
        else:
            items = client.list(kind, args.namespace)
    except UnknownKind as err:
        return _fail(str(err))
    except GalleyRejected as err:
        return _fail(*err.messages)
    except GalleyUnreachable as err:
        return _fail(str(err), code=EXIT_UNREACHABLE)
    if not items and args.output == "table":
        where = f"namespace {args.namespace}" if args.namespace else "any namespace"
        print(f"No {kind} resources found in {where}.", file=sys.stderr)
        return EXIT_OK
    print(render(kind, items, args.output, single=bool(args.name)))
    return EXIT_OK


def _delete_targets(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    if args.filenames:
        if args.kind or args.name:
            raise ValueError("give either KIND NAME or -f FILE, not both")
        documents, errors = parse_sources(_read_all(args.filenames))
        if errors:
            raise ValueError("; ".join(errors))
        targets = []
        for document in documents:
            identity = document_identity(document.data)
            if identity is None:
                raise ValueError(f"{document.source}: document {document.index}: needs kind and metadata.name")
            targets.append((resolve_kind(identity[0]), identity[1], identity[2]))
        return targets
    if not (args.kind and args.name):
        raise ValueError("delete needs KIND and NAME, or -f FILE")
    return [(resolve_kind(args.kind), args.namespace or DEFAULT_NAMESPACE, args.name)]


def delete_command(args: argparse.Namespace) -> int:
    try:
        targets = _delete_targets(args)
    except (ValueError, SourceError) as err:
        return _fail(str(err))
    client, code = _client(args), EXIT_OK
    for kind, namespace, name in targets:
        try:
            client.delete(kind, namespace, name)
        except GalleyRejected as err:
            code = _fail(*err.messages)
            continue
        except GalleyUnreachable as err:
            return _fail(str(err), code=EXIT_UNREACHABLE)
        print(f"{kind} {namespace}/{name} deleted")
    return code


def _add_galley_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--galley",
        default=os.environ.get(GALLEY_URL_ENV, DEFAULT_GALLEY_URL),
        help=f"galley API URL (default ${GALLEY_URL_ENV} or {DEFAULT_GALLEY_URL})",
    )


KIND_HELP = f"{kind_names()} (or the plural)"


def register(subparsers: Any) -> None:
    apply = subparsers.add_parser("apply", help="validate and store config from files, directories or stdin")
    apply.add_argument("-f", "--filename", dest="filenames", action="append", required=True, metavar="FILE|DIR|-")
    apply.add_argument("--dry-run", action="store_true", help="validate and report, store nothing")
    _add_galley_flag(apply)
    apply.set_defaults(handler=apply_command)

    get = subparsers.add_parser("get", help="show stored config")
    get.add_argument("kind", metavar="KIND", help=KIND_HELP)
    get.add_argument("name", metavar="NAME", nargs="?")
    get.add_argument(
        "-n", "--namespace", help=f"namespace (default: {DEFAULT_NAMESPACE} with NAME, all namespaces without)"
    )
    get.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    _add_galley_flag(get)
    get.set_defaults(handler=get_command)

    delete = subparsers.add_parser("delete", help="delete stored config by name or by the files that created it")
    delete.add_argument("kind", metavar="KIND", nargs="?", help=KIND_HELP)
    delete.add_argument("name", metavar="NAME", nargs="?")
    delete.add_argument("-n", "--namespace", help=f"namespace (default {DEFAULT_NAMESPACE})")
    delete.add_argument("-f", "--filename", dest="filenames", action="append", metavar="FILE|DIR|-")
    _add_galley_flag(delete)
    delete.set_defaults(handler=delete_command)
