"""Galley's watched directory against real NATS: files applied, re-applied, pruned; bad files keep the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.galley.store import ConfigStore
from services.galley.watch_dir import WATCH_SOURCE_ANNOTATION, DirectoryWatcher
from shared.model import VirtualService

pytestmark = pytest.mark.integration


def vs(name: str, subset: str = "v1") -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{name}]
  http:
  - route:
    - destination: {{host: {name}, subset: {subset}}}
"""


async def names(store: ConfigStore) -> dict[str, str]:
    """name -> routed subset of every stored VirtualService."""
    found = {}
    for item in await store.list("VirtualService"):
        assert isinstance(item.resource, VirtualService)
        found[item.resource.metadata.name] = str(item.resource.spec.http[0].route[0].destination.subset)
    return found


async def test_files_are_applied_changed_and_pruned(store: ConfigStore, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(vs("product") + "---\n" + vs("cart"))
    (tmp_path / "notes.txt").write_text("not config")
    watcher = DirectoryWatcher(store, tmp_path)
    await watcher.scan()
    assert await names(store) == {"product": "v1", "cart": "v1"}
    (stored,) = [item for item in await store.list("VirtualService") if item.resource.metadata.name == "cart"]
    assert stored.resource.metadata.annotations == {WATCH_SOURCE_ANNOTATION: "a.yaml"}

    (tmp_path / "a.yaml").write_text(vs("product", "v2"))  # cart left the file: pruned
    await watcher.scan()
    assert await names(store) == {"product": "v2"}

    revision = (await store.get("VirtualService", "shop", "product")).revision  # type: ignore[union-attr]
    await watcher.scan()  # nothing changed: nothing written
    assert (await store.get("VirtualService", "shop", "product")).revision == revision  # type: ignore[union-attr]

    (tmp_path / "a.yaml").unlink()
    await watcher.scan()
    assert await names(store) == {}


async def test_bad_file_is_reported_and_the_running_config_kept(store: ConfigStore, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(vs("product"))
    watcher = DirectoryWatcher(store, tmp_path)
    await watcher.scan()
    (tmp_path / "a.yaml").write_text(vs("product", "v2").replace("subset: v2}", "subset: v2, weight: -1}"))
    await watcher.scan()
    assert await names(store) == {"product": "v1"}
    (problem,) = watcher.errors["a.yaml"]
    assert problem.startswith(
        "a.yaml: document 1 (VirtualService shop/product): spec.http[0].route[0].destination.weight: unknown field"
    )
    (tmp_path / "a.yaml").write_bytes(b"\xff\xfe")
    await watcher.scan()
    assert "not valid UTF-8" in watcher.errors["a.yaml"][0] and await names(store) == {"product": "v1"}
    (tmp_path / "a.yaml").write_text(vs("product", "v3"))
    await watcher.scan()
    assert await names(store) == {"product": "v3"} and "a.yaml" not in watcher.errors


async def test_a_file_removed_while_galley_was_down_is_pruned_at_start(store: ConfigStore, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(vs("product"))
    await DirectoryWatcher(store, tmp_path).scan()
    (tmp_path / "a.yaml").unlink()
    await DirectoryWatcher(store, tmp_path).scan()
    assert await names(store) == {}
