"""Galley's GitOps source: a watched directory whose config files are applied, re-applied and pruned.

Every `interval` seconds the directory's config files (`.yaml`, `.yml`, `.json`; sorted, not recursive) are
read. A file whose bytes changed is validated as one batch with the same messages `isthmus apply` prints;
a file with any error is logged and nothing of it is stored, so the running config stays as it was. An
accepted file is stored with the annotation `WATCH_SOURCE_ANNOTATION: <file name>`, and every stored
resource carrying that annotation which the file no longer holds is deleted; a deleted file deletes
everything it created. Ownership lives in the stored resources themselves, so a file removed while galley
was down is pruned at the next start. When two files hold the same resource, the one applied last owns it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

from services.galley.sources import CONFIG_SUFFIXES, Source, SourceError, decode_text
from services.galley.store import ConfigStore
from services.galley.validate import validate_sources
from shared.clock import SYSTEM_CLOCK, Clock
from shared.model import Resource

log = logging.getLogger(__name__)

WATCH_SOURCE_ANNOTATION = "isthmus.io/watch-source"
DEFAULT_INTERVAL = 1.0


def _annotated(resource: Resource, source: str) -> Resource:
    annotations = dict(resource.metadata.annotations) | {WATCH_SOURCE_ANNOTATION: source}
    metadata = resource.metadata.model_copy(update={"annotations": annotations})
    return resource.model_copy(update={"metadata": metadata})


def _identity(resource: Resource) -> tuple[str, str, str]:
    return resource.kind, resource.metadata.namespace, resource.metadata.name


class DirectoryWatcher:
    """Keeps the store in line with one directory; `scan` is one pass, `run` repeats it forever."""

    def __init__(
        self, store: ConfigStore, directory: Path, clock: Clock = SYSTEM_CLOCK, interval: float = DEFAULT_INTERVAL
    ) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock
        self._interval = interval
        self._digests: dict[str, str] = {}
        self._started = False
        self.errors: dict[str, tuple[str, ...]] = {}
        """File name -> the messages that kept its latest content out of the store."""

    async def run(self) -> None:
        while True:
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # store outage: keep the digests, try again next round
                log.warning("watch-dir %s: %r; retrying", self._directory, err)
            await self._clock.sleep(self._interval)

    def _files(self) -> dict[str, Path]:
        try:
            paths = sorted(p for p in self._directory.iterdir() if p.is_file() and p.suffix.lower() in CONFIG_SUFFIXES)
        except OSError as err:
            log.warning("watch-dir %s: cannot list: %s", self._directory, err.strerror or err)
            return {}
        return {path.name: path for path in paths}

    async def scan(self) -> None:
        """One pass: apply changed files, prune resources of files that are gone."""
        if not self._started:
            # Files that created resources before this galley started, and are gone now, must be pruned too.
            for stored in await self._store.list():
                owner = stored.resource.metadata.annotations.get(WATCH_SOURCE_ANNOTATION)
                if owner is not None:
                    self._digests.setdefault(owner, "")
            self._started = True
        files = self._files()
        for name, path in files.items():
            try:
                raw = path.read_bytes()
            except OSError as err:
                log.warning("watch-dir %s: cannot read: %s", path, err.strerror or err)
                continue
            digest = hashlib.sha256(raw).hexdigest()
            if self._digests.get(name) == digest:
                continue
            await self._apply_file(name, raw)
            self._digests[name] = digest
        for gone in sorted(set(self._digests) - set(files)):
            await self._prune(gone, keep=set())
            del self._digests[gone]
            self.errors.pop(gone, None)

    async def _apply_file(self, name: str, raw: bytes) -> None:
        try:
            batch = validate_sources([Source(name, decode_text(name, raw))])
            problems = batch.errors
        except SourceError as err:
            batch, problems = None, (str(err),)
        if batch is None or problems:
            self.errors[name] = problems
            for problem in problems:
                log.warning("watch-dir: %s", problem)
            log.warning("watch-dir: %s not applied; the running config is kept", name)
            return
        self.errors.pop(name, None)
        resources = [_annotated(resource, name) for resource in batch.resources]
        for result in await self._store.apply(resources):
            if result.action != "unchanged":
                log.info("watch-dir %s: %s %s/%s %s", name, result.kind, result.namespace, result.name, result.action)
        await self._prune(name, keep={_identity(resource) for resource in resources})

    async def _prune(self, name: str, keep: set[tuple[str, str, str]]) -> None:
        for stored in await self._store.list():
            resource = stored.resource
            if resource.metadata.annotations.get(WATCH_SOURCE_ANNOTATION) != name or _identity(resource) in keep:
                continue
            if await self._store.delete(*_identity(resource)):
                log.info("watch-dir %s: %s %s/%s deleted", name, *_identity(resource))
