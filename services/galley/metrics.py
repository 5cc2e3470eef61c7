"""Galley's Prometheus metrics (validation, applies, stored config) and the `/metrics` route on its HTTP API.

Counters move as requests are handled; the stored-config gauges are read from the bucket when scraped.
A store that cannot be read at scrape time leaves those gauges as they were and counts the failure:
metrics never fail a scrape or an apply.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from nats.errors import Error as NatsError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from services.galley.store import ApplyResult, ConfigStore, StoreConflict
from services.galley.validate import BatchResult
from shared.model import KINDS

log = logging.getLogger(__name__)

APPLY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GalleyMetrics:
    """In a registry of its own, so several galleys (tests) can live in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.validation_passed = Counter(
            "galley_validation_passed", "Resources that passed validation, by kind.", ["kind"], registry=self.registry
        )
        self.validation_failed = Counter(
            "galley_validation_failed",
            "Validation issues, by kind (unknown when unreadable) and reason (parse, unknown_kind, duplicate, "
            "empty, or the schema error type such as missing).",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.applies = Counter(
            "galley_applies",
            "Apply requests, by outcome (applied, dry_run, invalid, bad_request, conflict, unavailable, error).",
            ["outcome"],
            registry=self.registry,
        )
        self.resources_applied = Counter(
            "galley_resources_applied",
            "Resources written by applies and rollbacks, by kind and action (created, configured, unchanged).",
            ["kind", "action"],
            registry=self.registry,
        )
        self.deletes = Counter("galley_deletes", "Resources deleted, by kind.", ["kind"], registry=self.registry)
        self.rollbacks = Counter("galley_rollbacks", "Rollbacks made, by kind.", ["kind"], registry=self.registry)
        self.apply_duration = Histogram(
            "galley_apply_duration_seconds",
            "Time to validate, analyze and store one apply request.",
            buckets=APPLY_BUCKETS,
            registry=self.registry,
        )
        self.stored = Gauge(
            "galley_config_resources", "Resources in the config bucket, by kind.", ["kind"], registry=self.registry
        )
        self.history_revisions = Gauge(
            "galley_config_history_revisions",
            "Revisions the config bucket keeps across all resources (delete markers included).",
            registry=self.registry,
        )
        self.revision = Gauge("galley_config_revision", "Latest revision of the config bucket.", registry=self.registry)
        self.scrape_errors = Counter(
            "galley_metrics_store_errors",
            "Scrapes that could not read the config bucket (its gauges kept their last values).",
            registry=self.registry,
        )
        for kind in KINDS:
            self.stored.labels(kind).set(0)

    def validated(self, batch: BatchResult) -> None:
        for resource in batch.resources:
            self.validation_passed.labels(resource.kind).inc()
        for kind, reason in batch.failures:
            self.validation_failed.labels(kind, reason).inc()

    def applied(self, results: Sequence[ApplyResult]) -> None:
        for result in results:
            self.resources_applied.labels(result.kind, str(result.action)).inc()

    async def refresh(self, store: ConfigStore) -> None:
        try:
            items = await store.list()
            kept, latest = await store.revisions()
        except Exception as err:  # telemetry fails open: the scrape still answers
            log.warning("config store unreadable for metrics: %r", err)
            self.scrape_errors.inc()
            return
        tally: Tally[str] = Tally(item.resource.kind for item in items)
        for kind in set(KINDS) | set(tally):
            self.stored.labels(kind).set(tally.get(kind, 0))
        self.history_revisions.set(kept)
        self.revision.set(latest)

    async def observe_apply(self, run: Callable[[], Awaitable[tuple[web.Response, str]]]) -> web.Response:
        """Runs one apply (which returns its response and outcome), timing it and counting its outcome;
        exceptions pass through, counted as conflict, bad_request or unavailable."""
        start = time.perf_counter()
        outcome = "error"
        try:
            response, outcome = await run()
            return response
        except StoreConflict:
            outcome = "conflict"
            raise
        except web.HTTPException:
            outcome = "bad_request"
            raise
        except (NatsError, TimeoutError):
            outcome = "unavailable"
            raise
        finally:
            self.applies.labels(outcome).inc()
            self.apply_duration.observe(time.perf_counter() - start)


METRICS_KEY = web.AppKey("metrics", GalleyMetrics)


def metrics_handler(store_key: web.AppKey[ConfigStore]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def prometheus(request: web.Request) -> web.Response:
        metrics = request.app[METRICS_KEY]
        await metrics.refresh(request.app[store_key])
        response = web.Response(body=generate_latest(metrics.registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    return prometheus
