"""`isthmus up` stops every process it started, even when a second stop signal arrives while it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.local.processes import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
READY_LINE = "Press Ctrl-C to stop everything."


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_second_sigterm_during_the_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    ports = [str(free_port()) for _ in range(5)]
    flags = ["--nats-port", "--consul-port", "--citadel-port", "--galley-port", "--pilot-port"]
    argv = [str(Path(sys.executable).parent / "isthmus"), "up", "--state-dir", str(tmp_path)]
    for flag, port in zip(flags, ports, strict=True):
        argv += [flag, port]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children: set[int] = set()
    try:
        assert process.stdout is not None
        seen = []
        deadline = time.monotonic() + 90
        for line in process.stdout:
            seen.append(line)
            if READY_LINE in line:
                break
            assert time.monotonic() < deadline, "isthmus up did not come up:\n" + "".join(seen)
        else:
            pytest.fail("isthmus up exited before it was up:\n" + "".join(seen))
        children = _children(process.pid)
        assert len(children) >= 5, "nats, consul, citadel, galley and pilot run as children"
        process.send_signal(signal.SIGTERM)
        time.sleep(0.05)  # the second signal lands while the first one's stop is under way
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while left := [pid for pid in children if _alive(pid)]:
            assert time.monotonic() < deadline, f"processes left behind: {left}"
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
