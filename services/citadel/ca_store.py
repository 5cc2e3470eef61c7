"""Citadel's state directory: the root certificate and its private key as PEM files, private to the owner."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

CERT_FILE = "ca-cert.pem"
KEY_FILE = "ca-key.pem"
DIR_MODE = 0o700
KEY_MODE = 0o600
CERT_MODE = 0o644


class CaStateError(RuntimeError):
    """The state directory is unusable (half-written, unreadable, or readable by others)."""


@dataclass(frozen=True, slots=True)
class CaFiles:
    cert_pem: bytes
    key_pem: bytes


def ensure_state_dir(state_dir: Path) -> None:
    state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(state_dir, DIR_MODE)


def read_ca_files(state_dir: Path) -> CaFiles | None:
    """Both files, or None when neither exists; anything in between is an error rather than a new CA."""
    cert_path, key_path = state_dir / CERT_FILE, state_dir / KEY_FILE
    cert_exists, key_exists = cert_path.exists(), key_path.exists()
    if not cert_exists and not key_exists:
        return None
    if cert_exists != key_exists:
        missing = key_path if cert_exists else cert_path
        raise CaStateError(f"{missing} is missing; restore it or remove the state directory {state_dir}")
    mode = stat.S_IMODE(key_path.stat().st_mode)
    if mode & 0o077:
        raise CaStateError(f"{key_path} has mode {mode:o}; the CA key must be private (chmod 600)")
    try:
        return CaFiles(cert_pem=cert_path.read_bytes(), key_pem=key_path.read_bytes())
    except OSError as error:
        raise CaStateError(f"cannot read the CA in {state_dir}: {error}") from error


def write_ca_files(state_dir: Path, files: CaFiles) -> None:
    """Write the key then the certificate, each via a private temp file and an atomic rename."""
    ensure_state_dir(state_dir)
    _write_atomic(state_dir / KEY_FILE, files.key_pem, KEY_MODE)
    _write_atomic(state_dir / CERT_FILE, files.cert_pem, CERT_MODE)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
