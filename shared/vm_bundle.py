"""The VM onboarding bundle `isthmus vm bundle` writes and `isthmus proxy run --bundle` reads: file names and keys."""

from __future__ import annotations

import shlex
from pathlib import Path

from shared.ports import CITADEL_ADDR_ENV, CONSUL_ADDR_ENV, NATS_URL_ENV, TRUST_DOMAIN_ENV

MESH_ENV = "mesh.env"
ROOT_CERT = "root-cert.pem"
TOKEN = "token"
README = "README"

SERVICE_ENV = "ISTHMUS_SERVICE"
NAMESPACE_ENV = "ISTHMUS_NAMESPACE"
SERVICE_ACCOUNT_ENV = "ISTHMUS_SERVICE_ACCOUNT"
VERSION_ENV = "ISTHMUS_VERSION"
APP_PORT_ENV = "ISTHMUS_APP_PORT"
UPSTREAMS_ENV = "ISTHMUS_UPSTREAMS"
"""Comma-separated services the workload calls (optional)."""
PROTOCOL_ENV = "ISTHMUS_PROTOCOL"
"""What the app's port speaks, `http` or `tcp` (optional: absent means http)."""
EXTRA_PORTS_ENV = "ISTHMUS_EXTRA_PORTS"
"""Further app ports the sidecar fronts, comma-separated `--extra-port` values (optional)."""
LOCALITY_ENV = "ISTHMUS_LOCALITY"
"""Where the VM runs, `region[/zone[/subzone]]` (optional)."""
WEIGHT_ENV = "ISTHMUS_WEIGHT"
"""The instance's share of its service's traffic, a whole number from 1 (optional: absent means 1)."""

KEYS = (
    NATS_URL_ENV,
    CONSUL_ADDR_ENV,
    CITADEL_ADDR_ENV,
    TRUST_DOMAIN_ENV,
    SERVICE_ENV,
    NAMESPACE_ENV,
    SERVICE_ACCOUNT_ENV,
    VERSION_ENV,
    APP_PORT_ENV,
    UPSTREAMS_ENV,
    PROTOCOL_ENV,
    EXTRA_PORTS_ENV,
    LOCALITY_ENV,
    WEIGHT_ENV,
)


class BundleError(ValueError):
    """The bundle directory is missing a file or holds a malformed line; the message names which."""


def format_env(values: dict[str, str]) -> str:
    """KEY=value lines (shell-quoted where needed), readable by systemd EnvironmentFile= and by `. mesh.env`."""
    return "".join(f"{key}={shlex.quote(values[key])}\n" for key in KEYS if key in values)


def parse_env(text: str, source: str = MESH_ENV) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, raw = line.partition("=")
        if not sep or not key.replace("_", "").isalnum():
            raise BundleError(f"{source}: line {number}: expected KEY=value")
        try:
            parts = shlex.split(raw)
        except ValueError as err:
            raise BundleError(f"{source}: line {number}: {err}") from err
        values[key] = parts[0] if parts else ""
    return values


def read_env(directory: Path) -> dict[str, str]:
    path = directory / MESH_ENV
    try:
        return parse_env(path.read_text(), str(path))
    except OSError as err:
        raise BundleError(f"--bundle {directory}: cannot read {MESH_ENV}: {err.strerror or err}") from err
