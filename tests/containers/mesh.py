"""The compose mesh under test: testcontainers' DockerCompose driving the repository's compose.yaml, adapted so it
also works with Debian's docker-compose 1.29, plus the helpers the container tests use to act on the mesh.

testcontainers' compose module speaks Compose v2 only (`docker compose ...`, `up --wait`, `ps --format json`).
The adapter keeps its lifecycle (`up --detach`, `down --volumes`, logs) and swaps what v1 lacks: the command is
`docker compose` where the plugin exists, else `docker-compose`; containers are found by the labels both
versions put on them; readiness is polled here (health checks, one-shot exit codes, every proxy SYNCED).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from testcontainers.compose import DockerCompose

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DRIVER = HERE / "driver.py"
NAMESPACE = "shop"
TRUST_DOMAIN = "cluster.local"
ONE_SHOT = ("tokens", "consul-bin", "apply")
VMS = (
    "order-service-v1",
    "payment-service-v1",
    "product-service-v1",
    "product-service-v2",
    "product-service-v1-b",
    "ratings-v1",
)
# Host ports compose.yaml publishes; 0 lets Docker pick free ones (other meshes may hold the defaults).
PORT_VARIABLES = (
    "NATS_PORT",
    "CONSUL_PORT",
    "PROMETHEUS_PORT",
    "GALLEY_PORT",
    "PILOT_PORT",
    "JAEGER_UI_PORT",
    "INGRESS_PORT",
)

T = TypeVar("T")
Record = tuple[float, int, str | None, str | None]


def compose_binary() -> list[str]:
    """`docker compose` where the v2 plugin answers, else the standalone `docker-compose` (1.29 on Debian)."""
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise RuntimeError("neither `docker compose` (v2 plugin) nor `docker-compose` is installed")


def eventually(check: Callable[[], T | None], within: float, what: str, interval: float = 1.0) -> T:
    """Polls `check` until it returns something truthy; AssertionError naming `what` and the last result."""
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            result = check()
        except (AssertionError, subprocess.CalledProcessError, OSError, ValueError) as error:
            result, last = None, error
        else:
            last = result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {within:.0f}s (last: {last!r})")
        time.sleep(interval)


def docker(*argv: str) -> str:
    """The docker CLI's stdout; a failure raises with its stderr."""
    done = subprocess.run(["docker", *argv], capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def service_of(container: dict[str, Any]) -> str:
    labels: dict[str, str] = container["Config"]["Labels"] or {}
    return labels.get("com.docker.compose.service", "")


@dataclass
class ComposeMesh(DockerCompose):
    """compose.yaml (+ the suite's override) as one Compose project with a unique name, torn down with volumes."""

    project_name: str = field(default_factory=lambda: f"isthmus-it-{uuid.uuid4().hex[:8]}")
    environment: dict[str, str] = field(default_factory=dict)

    @cached_property
    def compose_command_property(self) -> list[str]:
        command = [*compose_binary(), "--project-name", self.project_name]
        for name in self.compose_file_name or []:
            command += ["-f", name]
        return command

    def _run_command(self, cmd: str | list[str], context: str | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            cmd,
            capture_output=True,
            check=True,
            cwd=context or str(self.context),
            env={**os.environ, **self.environment},
        )

    def stop(self, down: bool = True) -> None:
        """`down --volumes --remove-orphans`: containers, the project network and its named volumes."""
        command = [*self.compose_command_property, "down", "--remove-orphans", "--timeout", "5"]
        if down:
            command.append("--volumes")
        self._run_command(command)

    # --- containers, by the labels both Compose versions set (through the docker CLI, as Compose itself) ------

    def containers(self) -> list[dict[str, Any]]:
        """`docker inspect` of every container of the project, running or not."""
        ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project_name}").split()
        if not ids:
            return []
        found: list[dict[str, Any]] = json.loads(docker("inspect", *ids))
        return found

    def container(self, service: str) -> dict[str, Any]:
        for candidate in self.containers():
            if service_of(candidate) == service:
                return candidate
        raise LookupError(f"no container for service {service} in project {self.project_name}")

    def container_id(self, service: str) -> str:
        return str(self.container(service)["Id"])

    def host_port(self, service: str, port: int) -> int:
        bindings = self.container(service)["NetworkSettings"]["Ports"].get(f"{port}/tcp") or []
        if not bindings:
            raise LookupError(f"{service}: port {port} is not published")
        return int(bindings[0]["HostPort"])

    def ip(self, service: str) -> str:
        networks: dict[str, Any] = self.container(service)["NetworkSettings"]["Networks"]
        return str(next(iter(networks.values()))["IPAddress"])

    def kill(self, service: str) -> None:
        docker("kill", self.container_id(service))

    def start_again(self, service: str) -> None:
        docker("start", self.container_id(service))

    def exec(
        self, service: str, argv: Sequence[str], stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`docker exec -i` in the service's container; with check, a non-zero exit raises with its output."""
        done = subprocess.run(
            ["docker", "exec", "-i", self.container_id(service), *argv],
            input=stdin or "",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{service}: {' '.join(argv)} exited {done.returncode}: {done.stderr or done.stdout}")
        return done

    def logs_tail(self, service: str, lines: int = 40) -> str:
        done = subprocess.run(
            ["docker", "logs", "--tail", str(lines), self.container_id(service)],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout + done.stderr

    # --- readiness --------------------------------------------------------------------------------------------

    def not_ready(self) -> list[str]:
        """What is not up yet: a service not healthy, a one-shot not exited 0 (an empty list means all is up)."""
        pending: list[str] = []
        for container in sorted(self.containers(), key=service_of):
            service, state = service_of(container), container["State"]
            if service in ONE_SHOT:
                if state["Status"] != "exited" or state["ExitCode"] != 0:
                    pending.append(f"{service} {state['Status']} (exit {state['ExitCode']})")
            elif "Health" in state and state["Health"]["Status"] != "healthy":
                pending.append(f"{service} {state['Health']['Status']}")
            elif state["Status"] != "running":
                pending.append(f"{service} {state['Status']}")
        return pending

    def failed_one_shots(self) -> list[str]:
        failed = []
        for container in self.containers():
            service, state = service_of(container), container["State"]
            if service in ONE_SHOT and state["Status"] == "exited" and state["ExitCode"] != 0:
                failed.append(f"{service} exited {state['ExitCode']}:\n{self.logs_tail(service)}")
        return failed

    def wait_until_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        while pending := self.not_ready():
            if failed := self.failed_one_shots():
                raise RuntimeError("a one-shot compose service failed:\n" + "\n".join(failed))
            if time.monotonic() > deadline:
                details = "\n".join(f"--- {p.split()[0]}:\n{self.logs_tail(p.split()[0])}" for p in pending)
                raise RuntimeError(f"mesh not ready within {within:.0f}s: {', '.join(pending)}\n{details}")
            time.sleep(2)

    def proxy_status(self) -> dict[str, str]:
        """proxy id -> SYNCED / STALE / NACKED / NOT SENT, from `isthmus proxy-status` in the pilot container."""
        table = self.exec("pilot", ["isthmus", "proxy-status"]).stdout.splitlines()
        return {row.split()[0]: row.split()[-1] for row in table[1:] if row.strip() and len(row.split()) >= 2}

    def wait_until_synced(self, proxies: int, within: float) -> dict[str, str]:
        def synced() -> dict[str, str] | None:
            status = self.proxy_status()
            ok = len(status) >= proxies and all(state == "SYNCED" for state in status.values())
            return status if ok else None

        return eventually(synced, within, f"{proxies} proxies SYNCED in proxy-status")

    # --- config and traffic -----------------------------------------------------------------------------------

    def apply(self, yaml_text: str) -> str:
        """`isthmus apply -f -` through galley, from inside the galley container."""
        return self.exec("galley", ["isthmus", "apply", "-f", "-"], stdin=yaml_text).stdout

    def delete(self, yaml_text: str) -> str:
        return self.exec("galley", ["isthmus", "delete", "-f", "-"], stdin=yaml_text).stdout

    def driver_command(
        self, vm: str, path: str, count: int = 0, seconds: float = 0, concurrency: int = 8, headers: Sequence[str] = ()
    ) -> list[str]:
        argv = ["docker", "exec", "-i", self.container_id(vm), "python3", "-", path]
        argv += ["--count", str(count), "--seconds", str(seconds), "--concurrency", str(concurrency)]
        for header in headers:
            argv += ["-H", header]
        return argv

    def traffic(
        self, vm: str, path: str, count: int = 0, seconds: float = 0, concurrency: int = 8, headers: Sequence[str] = ()
    ) -> list[Record]:
        """Requests from the VM's app through its sidecar (tests/containers/driver.py); one record each."""
        done = subprocess.run(
            self.driver_command(vm, path, count, seconds, concurrency, headers),
            input=DRIVER.read_text(),
            capture_output=True,
            text=True,
            timeout=120 + seconds,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"traffic driver in {vm} exited {done.returncode}: {done.stderr}")
        return parse_records(done.stdout)

    def call(self, vm: str, path: str, headers: Sequence[str] = ()) -> Record:
        return self.traffic(vm, path, count=1, concurrency=1, headers=headers)[0]


def parse_records(stdout: str) -> list[Record]:
    return [(float(t), int(s), v, c) for t, s, v, c in json.loads(stdout)]


def outcomes(records: Sequence[Record]) -> Counter[str]:
    """'200 v1', '503', 'no answer', ... per request."""
    tally: Counter[str] = Counter()
    for _, status, version, _ in records:
        if status == 0:
            tally["no answer"] += 1
        elif status == 200 and version:
            tally[f"200 {version}"] += 1
        else:
            tally[str(status)] += 1
    return tally
