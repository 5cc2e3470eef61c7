"""The container suite's one mesh per session: images from scripts/build-images.sh, then compose.yaml (plus a second
product-service v1 VM) brought up with testcontainers under a unique project name, torn down with its networks
and volumes at session end whatever happened. Skipped as a whole only when no Docker engine answers."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testcontainers.core.config import testcontainers_config

from tests.containers.mesh import HERE, PORT_VARIABLES, ROOT, VMS, ComposeMesh, eventually

# Ryuk (testcontainers' reaper) is an image from a registry; the fixture tears down itself instead.
testcontainers_config.ryuk_disabled = True

BUILD_SECONDS = 900
READY_SECONDS = 240
# Generous: the session fixture (image build + compose up) runs inside the first test's timeout.
SUITE_TEST_TIMEOUT = BUILD_SECONDS + READY_SECONDS + 300
BUILD_LOG = ROOT / ".tools" / "images" / "build-images.log"
# The mesh while it is up; whoever takes it out of here (the fixture or the hook below) tears it down.
RUNNING: list[ComposeMesh] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "containers: needs a Docker engine; runs the compose mesh (tests/containers)")
    config.addinivalue_line("markers", "disruptive: kills or reconfigures parts of the compose mesh; runs last")


def in_suite(item: pytest.Item | None) -> bool:
    return item is not None and Path(str(item.path)).is_relative_to(HERE)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    ours = [item for item in items if in_suite(item)]
    for item in ours:
        item.add_marker(pytest.mark.containers)
        item.add_marker(pytest.mark.timeout(SUITE_TEST_TIMEOUT))
    # Tests that kill containers run after those that need the whole mesh (a stable sort keeps the rest in order).
    if ours:
        first = items.index(ours[0])
        rest = [item for item in items[first:] if item not in ours]
        ours.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)
        items[first:] = ours + rest


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The suite's tests run as one block; the mesh goes down after its last one, not at the end of the whole
    session, so the rest of `make test` does not share two cores with a dozen containers."""
    if in_suite(item) and not in_suite(nextitem):
        while RUNNING:
            tear_down(RUNNING.pop())


def tear_down(compose: ComposeMesh) -> None:
    try:
        compose.stop()
    except subprocess.CalledProcessError as error:
        print(f"compose down of {compose.project_name} failed: {error.stderr.decode(errors='replace')}")


def docker_engine_error() -> str | None:
    """None when a Docker engine answers (`docker version` reaches the server), else why not."""
    try:
        done = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    if done.returncode != 0 or not done.stdout.strip():
        return (done.stderr.strip() or "no server version").splitlines()[-1]
    return None


def build_images() -> None:
    """scripts/build-images.sh: cached and idempotent (seconds when nothing changed, ~2-3 min cold)."""
    BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with BUILD_LOG.open("w") as log:
        done = subprocess.run(
            ["bash", "scripts/build-images.sh"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=BUILD_SECONDS,
            check=False,
        )
    if done.returncode != 0:
        tail = "\n".join(BUILD_LOG.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"scripts/build-images.sh exited {done.returncode} (log: {BUILD_LOG}):\n{tail}")


@pytest.fixture(scope="session")
def mesh() -> Iterator[ComposeMesh]:
    if (why := docker_engine_error()) is not None:
        pytest.skip(f"no Docker engine answers ({why}): the container suite needs one")
    build_images()
    compose = ComposeMesh(
        context=str(ROOT),
        compose_file_name=["compose.yaml", str(HERE.relative_to(ROOT) / "compose.failover.yaml")],
        wait=False,
        environment={variable: "0" for variable in PORT_VARIABLES},
    )
    RUNNING.append(compose)
    try:
        started = time.monotonic()
        try:
            compose.start()
        except subprocess.CalledProcessError as error:
            raise RuntimeError(f"compose up failed: {error.stderr.decode(errors='replace')}") from error
        compose.wait_until_ready(READY_SECONDS)
        compose.wait_until_synced(len(VMS), READY_SECONDS)
        # Routing works end to end (config applied, endpoints pushed, certificates issued).
        eventually(
            lambda: compose.call("order-service-v1", "/call/product-service/")[1] == 200,
            READY_SECONDS,
            "order-service -> product-service answers 200",
        )
        print(f"compose mesh {compose.project_name} ready in {time.monotonic() - started:.0f}s")
        yield compose
    finally:
        if compose in RUNNING:
            RUNNING.remove(compose)
            tear_down(compose)
