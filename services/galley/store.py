"""Last step of galley's flow: accepted resources written to the config KV bucket that pilot watches."""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from shared.bus.names import CONFIG_BUCKET, config_key, key_token
from shared.model import Resource, dump_resource, parse_resource

log = logging.getLogger(__name__)

CONFIG_HISTORY = 10
_WRITE_ATTEMPTS = 5


class Action(StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class ApplyResult:
    kind: str
    namespace: str
    name: str
    action: Action
    revision: int
    """KV revision holding the resource now (0 for a dry-run create)."""


@dataclass(frozen=True)
class StoredResource:
    resource: Resource
    revision: int


@dataclass(frozen=True)
class HistoryEntry:
    """One kept revision of a key: a stored resource, or a delete marker (resource None)."""

    revision: int
    operation: str
    """"PUT", "DEL" or "PURGE"."""
    resource: Resource | None
    created: float | None
    """Unix time the revision was written, when the server reported it."""


class RevisionNotFound(LookupError):
    """A rollback named a revision the bucket does not keep (or one that is a delete)."""


class StoreConflict(ValueError):
    """The write would overwrite a different resource, or kept losing races with concurrent writers."""


def encode_resource(resource: Resource) -> bytes:
    """The stored value: JSON of dump_resource, without metadata.resourceVersion (the KV revision is that)."""
    metadata = resource.metadata.model_copy(update={"resource_version": None})
    return json.dumps(dump_resource(resource.model_copy(update={"metadata": metadata})), separators=(",", ":")).encode()


def decode_resource(value: bytes) -> Resource:
    return parse_resource(json.loads(value))


def _unix_time(created: object) -> float | None:
    """nats-py reports an entry's time as a datetime from watches (its annotation says int nanoseconds)."""
    if isinstance(created, datetime):
        return created.timestamp()
    if isinstance(created, int) and created > 0:
        return created / 1e9
    return None


def _identity(resource: Resource) -> tuple[str, str, str]:
    return resource.kind, resource.metadata.namespace, resource.metadata.name


async def open_config_bucket(js: JetStreamContext, bucket: str = CONFIG_BUCKET) -> KeyValue:
    """The config bucket, created with CONFIG_HISTORY revisions per key if it does not exist yet."""
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(bucket=bucket, history=CONFIG_HISTORY)
    except Exception:
        # Another galley may have created it between the two calls; if so, use theirs.
        return await js.key_value(bucket)


LIST_RECHECKS = 2
"""Extra reads of a listing that came back empty from a bucket holding messages (see ConfigStore.list)."""


class ConfigStore:
    """Accepted config in JetStream KV: key config_key(kind, namespace, name), value encode_resource()."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str = CONFIG_BUCKET) -> ConfigStore:
        return cls(await open_config_bucket(js, bucket))

    async def _current(self, key: str) -> tuple[bytes, int] | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.value or b"", entry.revision or 0

    async def apply(self, resources: Sequence[Resource], dry_run: bool = False) -> list[ApplyResult]:
        """Write every changed resource; nothing is written when any resource conflicts with stored data."""
        plans: list[tuple[Resource, bytes, tuple[bytes, int] | None]] = []
        for resource in resources:
            key = config_key(*_identity(resource))
            current = await self._current(key)
            if current is not None:
                self._check_same_resource(resource, current[0])
            plans.append((resource, encode_resource(resource), current))
        results: list[ApplyResult] = []
        for resource, value, current in plans:
            if current is not None and current[0] == value:
                action, revision = Action.UNCHANGED, current[1]
            elif dry_run:
                action = Action.CREATED if current is None else Action.CONFIGURED
                revision = 0 if current is None else current[1]
            else:
                action, revision = await self._write(resource, value, current)
            results.append(ApplyResult(*_identity(resource), action, revision))
        return results

    def _check_same_resource(self, resource: Resource, stored: bytes) -> None:
        try:
            existing = decode_resource(stored)
        except ValueError:
            log.warning("replacing unreadable stored value of %s %s/%s", *_identity(resource))
            return
        if _identity(existing) != _identity(resource):
            kind, namespace, name = _identity(resource)
            raise StoreConflict(
                f"{kind} {namespace}/{name}: its storage key already holds {existing.kind} "
                f"{existing.metadata.namespace}/{existing.metadata.name}; rename one of them"
            )

    async def _write(self, resource: Resource, value: bytes, current: tuple[bytes, int] | None) -> tuple[Action, int]:
        key = config_key(*_identity(resource))
        for _ in range(_WRITE_ATTEMPTS):
            try:
                if current is None:
                    return Action.CREATED, await self._kv.create(key, value)
                return Action.CONFIGURED, await self._kv.update(key, value, last=current[1])
            except KeyWrongLastSequenceError:
                current = await self._current(key)
                if current is not None and current[0] == value:
                    return Action.UNCHANGED, current[1]
        kind, namespace, name = _identity(resource)
        raise StoreConflict(f"{kind} {namespace}/{name}: changed concurrently too often; apply again")

    async def revisions(self) -> tuple[int, int]:
        """(revisions the bucket keeps across all keys, delete markers included; its latest revision)."""
        state = (await self._kv.status()).stream_info.state
        return state.messages, state.last_seq

    async def get(self, kind: str, namespace: str, name: str) -> StoredResource | None:
        current = await self._current(config_key(kind, namespace, name))
        if current is None:
            return None
        resource = decode_resource(current[0])
        if _identity(resource) != (kind, namespace, name):
            return None  # another name that maps to the same key
        return StoredResource(resource, current[1])

    async def list(self, kind: str | None = None, namespace: str | None = None) -> list[StoredResource]:
        """Latest revision of every matching resource, sorted by kind, namespace, name."""
        pattern = ".".join((key_token(kind) if kind else "*", key_token(namespace) if namespace else "*", "*"))
        if pattern == "*.*.*":
            pattern = ">"
        found = await self._scan(pattern, kind, namespace)
        for _ in range(LIST_RECHECKS):
            # nats-py's watcher can signal "no more values" before the first one when they arrive while it is
            # set up; an empty answer from a bucket that holds messages is therefore read again.
            if found or (await self._kv.status()).stream_info.state.messages == 0:
                break
            found = await self._scan(pattern, kind, namespace)
        return found

    async def _scan(self, pattern: str, kind: str | None, namespace: str | None) -> builtins.list[StoredResource]:
        watcher = await self._kv.watch(pattern, ignore_deletes=True)
        found: builtins.list[StoredResource] = []
        try:
            async for entry in watcher:
                if entry is None:
                    break
                try:
                    resource = decode_resource(entry.value or b"")
                except ValueError:
                    log.warning("skipping unreadable config value under key %s", entry.key)
                    continue
                if (kind is None or resource.kind == kind) and (
                    namespace is None or resource.metadata.namespace == namespace
                ):
                    found.append(StoredResource(resource, entry.revision or 0))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return sorted(found, key=lambda item: _identity(item.resource))

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Leave a delete marker (pilot's watch sees it); False when there was nothing to delete."""
        if await self.get(kind, namespace, name) is None:
            return False
        await self._kv.delete(config_key(kind, namespace, name))
        return True

    async def history(self, kind: str, namespace: str, name: str) -> tuple[HistoryEntry, ...]:
        """Every revision the bucket keeps for the resource (CONFIG_HISTORY at most), oldest first."""
        try:
            entries = await self._kv.history(config_key(kind, namespace, name))
        except NoKeysError:
            return ()
        found: builtins.list[HistoryEntry] = []
        for entry in entries:
            resource: Resource | None = None
            if entry.operation is None and entry.value:
                try:
                    resource = decode_resource(entry.value)
                except ValueError:
                    log.warning(
                        "history of %s %s/%s: unreadable value at revision %s", kind, namespace, name, entry.revision
                    )
                if resource is not None and _identity(resource) != (kind, namespace, name):
                    continue  # another name that maps to the same key
            found.append(
                HistoryEntry(entry.revision or 0, entry.operation or "PUT", resource, _unix_time(entry.created))
            )
        return tuple(found)

    async def rollback(self, kind: str, namespace: str, name: str, revision: int) -> ApplyResult:
        """Store the resource as it was at `revision` again, as a new revision (history is never rewritten)."""
        kept = await self.history(kind, namespace, name)
        target = next((item for item in kept if item.revision == revision), None)
        if target is None or target.resource is None:
            available = ", ".join(str(item.revision) for item in kept if item.resource is not None) or "none"
            what = "is a delete" if target is not None else "is not in the kept history"
            raise RevisionNotFound(
                f"{kind} {namespace}/{name}: revision {revision} {what}; revisions to roll back to: {available}"
            )
        (result,) = await self.apply([target.resource])
        return result
