"""Citadel's state directory: the root certificate and its private key as PEM files, private to the owner."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

CERT_FILE = "ca-cert.pem"
KEY_FILE = "ca-key.pem"
CHAIN_FILE = "cert-chain.pem"
ROOT_FILE = "root-cert.pem"
"""With CHAIN_FILE and ROOT_FILE present the directory holds a plug-in CA in Istio's layout (cacerts): ca-cert.pem
is an intermediate signed (through cert-chain.pem) by root-cert.pem, and citadel signs with it."""
EXTRA_ROOTS_FILE = "extra-roots.pem"
"""Optional: further roots to publish in the trust bundle (a new root before a rotation, the old one after)."""
DIR_MODE = 0o700
KEY_MODE = 0o600
CERT_MODE = 0o644


class CaStateError(RuntimeError):
    """The state directory is unusable (half-written, unreadable, or readable by others)."""


@dataclass(frozen=True, slots=True)
class CaFiles:
    cert_pem: bytes
    key_pem: bytes
    chain_pem: bytes | None = None
    """Plug-in CA only: cert-chain.pem (ca-cert.pem's chain, possibly ending in the root)."""
    root_pem: bytes | None = None
    """Plug-in CA only: root-cert.pem."""
    extra_roots_pem: bytes | None = None


def _optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise CaStateError(f"cannot read {path}: {error}") from error


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
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as error:
        raise CaStateError(f"cannot read the CA in {state_dir}: {error}") from error
    chain_pem, root_pem = _optional(state_dir / CHAIN_FILE), _optional(state_dir / ROOT_FILE)
    if (chain_pem is None) != (root_pem is None):
        absent = CHAIN_FILE if chain_pem is None else ROOT_FILE
        raise CaStateError(f"{state_dir / absent} is missing: a plug-in CA needs {CHAIN_FILE} and {ROOT_FILE}")
    return CaFiles(cert_pem, key_pem, chain_pem, root_pem, _optional(state_dir / EXTRA_ROOTS_FILE))


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
