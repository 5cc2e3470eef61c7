"""Child processes of the local mesh: each in its own process group, stopped with SIGTERM then SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_handed_out: set[int] = set()
_next_port = [0]


def _ephemeral_floor() -> int:
    """Lowest port the kernel hands to outgoing connections; ports below it are never taken by a connect()."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on, picked below the ephemeral range and never twice in this process.

    Asking the kernel for port 0 and closing the socket races with outgoing connections, which may be
    given that same port before the caller binds it; ports below the ephemeral range cannot be.
    """
    floor = _ephemeral_floor()
    low = 20000 if floor > 21000 else 1024
    span = floor - low
    if not _next_port[0]:
        _next_port[0] = low + (os.getpid() * 7919) % span
    for _ in range(span):
        port = _next_port[0]
        _next_port[0] = low + (port + 1 - low) % span
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free port between {low} and {floor}")


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class PortInUse(RuntimeError):
    """A port the local mesh wants is taken by another process; the message names it and the flag to change."""


def require_free(port: int, what: str, flag: str) -> None:
    if port_open("127.0.0.1", port):
        raise PortInUse(f"port {port} for {what} is already in use on 127.0.0.1; choose another with {flag}")


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=5)

    def kill(self) -> None:
        """Hard stop (SIGKILL), as a crash would: no deregistration, no cleanup."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Supervisor:
    """Starts children with logs in log_dir; stop_all() stops them in reverse start order."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        child = Child(name=name, popen=popen, log_path=log_path)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()

    def dead(self) -> list[Child]:
        return [child for child in self.children if not child.alive]
