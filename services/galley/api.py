"""Galley's HTTP front door: apply, read and delete config over JSON, in front of validate and the store.

`/metrics` serves galley's Prometheus metrics (`metrics.py`) on the same port.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from nats.errors import Error as NatsError

from services.galley.analyze import analyze, merged_view
from services.galley.kinds import resolve_kind
from services.galley.metrics import METRICS_KEY, GalleyMetrics, metrics_handler
from services.galley.sources import Source
from services.galley.store import (
    ApplyResult,
    ConfigStore,
    HistoryEntry,
    RevisionNotFound,
    StoreConflict,
    StoredResource,
)
from services.galley.validate import validate_sources
from shared.model import UnknownKind, dump_resource

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 16 * 1024 * 1024
RAW_SOURCE_NAME = "request"

STORE_KEY = web.AppKey("store", ConfigStore)
HEALTH_KEY: web.AppKey[Callable[[], bool]] = web.AppKey("health")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, *messages: str) -> web.Response:
    return web.json_response({"errors": list(messages)}, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as {"errors": [...]}; store outages are 503 so clients can tell them apart."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, f"request body is larger than the {MAX_REQUEST_BYTES} byte limit")
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return error_response(err.status, err.reason)
    except StoreConflict as err:
        return error_response(409, str(err))
    except (NatsError, TimeoutError) as err:
        log.warning("config store unavailable: %r", err)
        return error_response(503, f"config store unavailable: {err!r}")


def resource_json(stored: StoredResource) -> dict[str, Any]:
    """The resource as stored, with its KV revision shown as metadata.resourceVersion."""
    data = dump_resource(stored.resource)
    data["metadata"]["resourceVersion"] = str(stored.revision)
    return data


def result_json(result: ApplyResult) -> dict[str, Any]:
    return {
        "kind": result.kind,
        "namespace": result.namespace,
        "name": result.name,
        "action": str(result.action),
        "revision": result.revision,
    }


class BadRequest(ValueError):
    pass


def _flag(value: str | None, name: str) -> bool:
    if value is None or value.lower() in ("", "false", "0"):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise BadRequest(f"{name}: expected true or false, got {value!r}")


def parse_apply_body(body: bytes, content_type: str, query_dry_run: str | None) -> tuple[list[Source], bool]:
    """`{"sources": [{"name", "content"}], "dryRun"}` as JSON, or the body itself as one YAML/JSON source."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadRequest(f"request body is not valid UTF-8 (offset {err.start})") from err
    data: Any = None
    if content_type == "application/json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise BadRequest(f"request body is not valid JSON: line {err.lineno}: {err.msg}") from err
    if not (isinstance(data, dict) and "sources" in data):
        return [Source(RAW_SOURCE_NAME, text)], _flag(query_dry_run, "dryRun")
    unknown = sorted(set(data) - {"sources", "dryRun"})
    if unknown:
        raise BadRequest(f"unknown request field(s): {', '.join(unknown)}")
    raw_sources, dry_run = data["sources"], data.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise BadRequest("dryRun: expected true or false")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise BadRequest("sources: expected a non-empty list of {name, content}")
    sources: list[Source] = []
    for index, item in enumerate(raw_sources):
        if not isinstance(item, dict) or set(item) != {"name", "content"}:
            raise BadRequest(f"sources[{index}]: expected exactly the fields name and content")
        if not isinstance(item["name"], str) or not isinstance(item["content"], str):
            raise BadRequest(f"sources[{index}]: name and content must be strings")
        sources.append(Source(item["name"] or f"sources[{index}]", item["content"]))
    return sources, dry_run


async def apply(request: web.Request) -> web.Response:
    return await request.app[METRICS_KEY].observe_apply(lambda: _apply(request))


async def _apply(request: web.Request) -> tuple[web.Response, str]:
    """The response and its outcome for metrics."""
    metrics = request.app[METRICS_KEY]
    body = await request.read()
    try:
        sources, dry_run = parse_apply_body(body, request.content_type, request.query.get("dryRun"))
    except BadRequest as err:
        return error_response(400, str(err)), "bad_request"
    batch = validate_sources(sources)
    metrics.validated(batch)
    if not batch.ok:
        return error_response(400, *batch.errors), "invalid"
    store = request.app[STORE_KEY]
    stored = [item.resource for item in await store.list()]
    warnings = analyze(merged_view(batch.resources, stored), focus=batch.resources)
    results = await store.apply(batch.resources, dry_run=dry_run)
    if not dry_run:
        metrics.applied(results)
    for result in results:
        if result.action != "unchanged" and not dry_run:
            log.info("%s %s/%s %s (revision %d)", *_result_fields(result))
    body_json = {"applied": [result_json(r) for r in results], "dryRun": dry_run, "warnings": warnings}
    return web.json_response(body_json), "dry_run" if dry_run else "applied"


def _result_fields(result: ApplyResult) -> tuple[str, str, str, str, int]:
    return result.kind, result.namespace, result.name, str(result.action), result.revision


def _kind(text: str) -> str:
    try:
        return resolve_kind(text)
    except UnknownKind as err:
        raise web.HTTPBadRequest(reason=str(err)) from err


async def list_resources(request: web.Request) -> web.Response:
    kind = request.query.get("kind") or None
    namespace = request.query.get("namespace") or None
    items = await request.app[STORE_KEY].list(_kind(kind) if kind else None, namespace)
    return web.json_response({"items": [resource_json(item) for item in items]})


def _path_identity(request: web.Request) -> tuple[str, str, str]:
    info = request.match_info
    return _kind(info["kind"]), info["namespace"], info["name"]


async def get_resource(request: web.Request) -> web.Response:
    kind, namespace, name = _path_identity(request)
    stored = await request.app[STORE_KEY].get(kind, namespace, name)
    if stored is None:
        return error_response(404, f"{kind} {namespace}/{name} not found")
    return web.json_response(resource_json(stored))


async def delete_resource(request: web.Request) -> web.Response:
    kind, namespace, name = _path_identity(request)
    if not await request.app[STORE_KEY].delete(kind, namespace, name):
        return error_response(404, f"{kind} {namespace}/{name} not found")
    request.app[METRICS_KEY].deletes.labels(kind).inc()
    log.info("%s %s/%s deleted", kind, namespace, name)
    return web.json_response({"deleted": {"kind": kind, "namespace": namespace, "name": name}})


def history_json(item: HistoryEntry) -> dict[str, Any]:
    return {
        "revision": item.revision,
        "operation": item.operation,
        "created": item.created,
        "resource": dump_resource(item.resource) if item.resource is not None else None,
    }


async def resource_history(request: web.Request) -> web.Response:
    kind, namespace, name = _path_identity(request)
    kept = await request.app[STORE_KEY].history(kind, namespace, name)
    if not kept:
        return error_response(404, f"{kind} {namespace}/{name} has no history")
    return web.json_response({"history": [history_json(item) for item in kept]})


async def rollback_resource(request: web.Request) -> web.Response:
    """Body {"revision": N}: store the resource as it was at revision N again, as a new revision."""
    kind, namespace, name = _path_identity(request)
    try:
        body = await request.json()
    except ValueError:
        body = None
    revision = body.get("revision") if isinstance(body, dict) else None
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
        return error_response(400, "revision: expected a positive integer in the JSON body")
    try:
        result = await request.app[STORE_KEY].rollback(kind, namespace, name, revision)
    except RevisionNotFound as err:
        return error_response(404, str(err))
    request.app[METRICS_KEY].rollbacks.labels(kind).inc()
    request.app[METRICS_KEY].applied([result])
    log.info(
        "%s %s/%s rolled back to revision %d: %s (revision %d)",
        kind,
        namespace,
        name,
        revision,
        result.action,
        result.revision,
    )
    return web.json_response({"rolledBack": result_json(result), "from": revision})


async def healthz(request: web.Request) -> web.Response:
    if request.app[HEALTH_KEY]():
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "config store disconnected"}, status=503)


def create_app(
    store: ConfigStore, healthy: Callable[[], bool], metrics: GalleyMetrics | None = None
) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[errors_as_json])
    app[STORE_KEY] = store
    app[HEALTH_KEY] = healthy
    app[METRICS_KEY] = metrics or GalleyMetrics()
    app.router.add_post("/v1/apply", apply)
    app.router.add_get("/v1/resources", list_resources)
    resource = "/v1/resources/{kind}/{namespace}/{name}"
    app.router.add_get(resource, get_resource)
    app.router.add_delete(resource, delete_resource)
    app.router.add_get("/v1/history/{kind}/{namespace}/{name}", resource_history)
    app.router.add_post("/v1/rollback/{kind}/{namespace}/{name}", rollback_resource)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler(STORE_KEY))
    return app
