"""Citadel's gRPC call made by a short-lived child process, so the sidecar itself never loads grpc.

grpc's core library and its threads cost a sidecar about 15 MB of resident memory for a call made once per
certificate lifetime (Istio keeps it out of Envoy for the same reason: pilot-agent makes the CSR call). The
sidecar runs `python -m services.proxy.csr_child`, writes one JSON request to its stdin (address, server
name, citadel's trust bundle, the CSR, and the bootstrap token or the renewal chain and key) and reads one
JSON answer from its stdout: the issued certificate, or the refusal or failure with citadel's status code
name. Secrets travel only through the pipe, never on the command line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from typing import Any

from shared.identity.svid import IssuedCertificate

CHILD_TIMEOUT_SECONDS = 30.0
"""The child's whole run (interpreter start, imports, the call with its own 10 s deadline) must end by then."""


class CertificateCallRefused(Exception):
    """Citadel said no; `code` is its gRPC status code name (UNAUTHENTICATED, PERMISSION_DENIED, ...)."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(f"{code}: {reason}" if code else reason)
        self.reason = reason
        self.code = code


class CertificateCallFailed(ConnectionError):
    """Citadel could not be reached, failed, or the child process did not answer; retry with backoff."""


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


def _unb64(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text is not None else None


class ChildCitadelClient:
    """The `create_certificate` of services.citadel.client.CitadelClient, each call made by a child process."""

    def __init__(self, address: str, trust_bundle_pem: bytes, server_name: str = "citadel") -> None:
        if not trust_bundle_pem.strip():
            raise ValueError("trust_bundle_pem is empty; citadel's certificate could not be verified")
        self._address = address
        self._bundle = trust_bundle_pem
        self._server_name = server_name

    async def create_certificate(
        self,
        csr_pem: bytes,
        *,
        token: str | None = None,
        client_chain_pem: bytes | None = None,
        client_key_pem: bytes | None = None,
    ) -> IssuedCertificate:
        request = {
            "address": self._address,
            "server_name": self._server_name,
            "trust_bundle": _b64(self._bundle),
            "csr": _b64(csr_pem),
            "token": token,
            "client_chain": _b64(client_chain_pem),
            "client_key": _b64(client_key_pem),
        }
        answer = await _run_child(json.dumps(request).encode())
        refused = answer.get("refused")
        if isinstance(refused, dict):
            raise CertificateCallRefused(str(refused.get("reason", "")), str(refused.get("code", "")))
        failed = answer.get("failed")
        if failed is not None:
            raise CertificateCallFailed(str(failed))
        try:
            return IssuedCertificate(
                chain_pem=tuple(base64.b64decode(pem) for pem in answer["chain"]),
                trust_bundle_pem=base64.b64decode(answer["trust_bundle"]),
                not_after=float(answer["not_after"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CertificateCallFailed(f"unreadable answer from the certificate request process: {err!r}") from None

    async def close(self) -> None:
        """Nothing stays open between calls."""


async def _run_child(request: bytes) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.proxy.csr_child",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(CHILD_TIMEOUT_SECONDS):
            stdout, stderr = await process.communicate(request)
    except TimeoutError:
        raise CertificateCallFailed(
            f"the certificate request process did not answer within {CHILD_TIMEOUT_SECONDS:.0f}s"
        ) from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    try:
        answer = json.loads(stdout)
    except ValueError:
        tail = stderr.decode(errors="replace").strip()[-500:]
        raise CertificateCallFailed(
            f"the certificate request process exited with {process.returncode}: {tail or 'no output'}"
        ) from None
    if not isinstance(answer, dict):
        raise CertificateCallFailed("the certificate request process answered with something other than an object")
    return answer


async def _call(request: dict[str, Any]) -> dict[str, Any]:
    from services.citadel.client import CertificateRefused, CitadelClient

    bundle = _unb64(request["trust_bundle"]) or b""
    client = CitadelClient(request["address"], bundle, server_name=request["server_name"])
    try:
        issued = await client.create_certificate(
            _unb64(request["csr"]) or b"",
            token=request.get("token"),
            client_chain_pem=_unb64(request.get("client_chain")),
            client_key_pem=_unb64(request.get("client_key")),
        )
    except CertificateRefused as err:
        return {"refused": {"reason": err.reason, "code": err.code}}
    except Exception as err:  # unavailable, bad answer: the parent retries with backoff
        return {"failed": str(err) or type(err).__name__}
    finally:
        await client.close()
    return {
        "chain": [_b64(pem) for pem in issued.chain_pem],
        "trust_bundle": _b64(issued.trust_bundle_pem),
        "not_after": issued.not_after,
    }


def main() -> int:
    try:
        request = json.loads(sys.stdin.buffer.read())
        answer = asyncio.run(_call(request))
    except (ValueError, KeyError, TypeError) as err:
        answer = {"failed": f"bad certificate request: {err!r}"}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
