"""Enrollment by a short-lived child process, so the sidecar itself never loads grpc or `cryptography`.

grpc's core library and its threads cost a sidecar about 15 MB of resident memory and `cryptography` about
9 MB more, for work done once per certificate lifetime (Istio keeps both out of Envoy for the same reason:
pilot-agent makes the CSR call). The sidecar runs `python -m services.proxy.csr_child`, writes one JSON
request to its stdin (citadel's address, server name and trust bundle, the SPIFFE ID, and the bootstrap token
and/or the current chain and key to renew with) and reads one JSON answer from its stdout. The child makes a
fresh key and a CSR, asks citadel (renewal first when it has a current certificate; a renewal refused as
UNAUTHENTICATED asks again with the token, if any), checks the answer (enrollment_of: the leaf names exactly
the SPIFFE ID and carries the new key; not expired) and answers with the key, chain, trust bundle, expiry and
the root that issued the chain, or with the refusal, rejection or failure. Secrets travel only through the
pipes, never on the command line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.identity.enrollment import CertificateError, Enrollment

CHILD_TIMEOUT_SECONDS = 30.0
"""The child's whole run (interpreter start, imports, up to two calls with their own 10 s deadline) must end by
then."""
CHILD_COMMAND = (sys.executable, "-m", "services.proxy.csr_child")
RENEWAL_REFUSED = "UNAUTHENTICATED"
"""Status code name of a renewal citadel does not accept (its root was retired): ask with the token instead."""

log = logging.getLogger(__name__)


class CertificateCallRefused(Exception):
    """Citadel said no; `code` is its gRPC status code name (UNAUTHENTICATED, PERMISSION_DENIED, ...)."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(f"{code}: {reason}" if code else reason)
        self.reason = reason
        self.code = code


class CertificateCallFailed(ConnectionError):
    """Citadel could not be reached, failed, or the child process did not answer sensibly; retry with backoff."""


@dataclass(frozen=True, slots=True)
class EnrollmentRequest:
    address: str
    server_name: str
    trust_bundle_pem: bytes
    """The roots citadel's serving certificate must chain to."""
    spiffe_id: str
    token: str | None = field(repr=False)
    renew_chain_pem: bytes | None = None
    """The current chain and key, still valid: renewal proof. Both or neither."""
    renew_key_pem: bytes | None = field(default=None, repr=False)

    def to_json(self) -> bytes:
        renew = None
        if self.renew_chain_pem is not None and self.renew_key_pem is not None:
            renew = {"chain": _b64(self.renew_chain_pem), "key": _b64(self.renew_key_pem)}
        request = {
            "address": self.address,
            "server_name": self.server_name,
            "trust_bundle": _b64(self.trust_bundle_pem),
            "spiffe_id": self.spiffe_id,
            "token": self.token,
            "renew_with": renew,
        }
        return json.dumps(request).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"expected base64 text, got {type(text).__name__}")
    return base64.b64decode(text, validate=True)


async def enroll_in_child(request: EnrollmentRequest) -> Enrollment:
    """Runs one enrollment in a child process. Raises CertificateCallRefused (citadel said no), CertificateError
    (citadel's certificate failed the checks) or CertificateCallFailed (anything else, garbage answers included)."""
    if not request.trust_bundle_pem.strip():
        raise ValueError("trust_bundle_pem is empty; citadel's certificate could not be verified")
    return await run_enrollment_child(CHILD_COMMAND, request.to_json())


async def run_enrollment_child(command: Sequence[str], request: bytes) -> Enrollment:
    """Runs `command`, writes `request` to its stdin and reads its answer (this module's format) as
    enroll_in_child does; also used by the benchmark's sidecars, whose child signs with a CA on disk."""
    answer = await _run_child(command, request)
    refused = answer.get("refused")
    if isinstance(refused, dict):
        raise CertificateCallRefused(str(refused.get("reason", "")), str(refused.get("code", "")))
    rejected = answer.get("rejected")
    if rejected is not None:
        raise CertificateError(str(rejected))
    failed = answer.get("failed")
    if failed is not None:
        raise CertificateCallFailed(str(failed))
    try:
        enrolled = _enrollment_of_answer(answer["enrolled"])
    except (KeyError, TypeError, ValueError) as err:
        raise CertificateCallFailed(f"unreadable answer from the enrollment process: {err!r}") from None
    if answer.get("renewal_refused"):
        log.warning("renewal refused (%s); enrolled with the bootstrap token", answer["renewal_refused"])
    return enrolled


def _enrollment_of_answer(enrolled: Any) -> Enrollment:
    if not isinstance(enrolled, dict):
        raise TypeError("'enrolled' is not an object")
    chain = enrolled["chain"]
    if not isinstance(chain, list) or not chain:
        raise ValueError("the chain is empty or not a list")
    not_after = enrolled["not_after"]
    if isinstance(not_after, bool) or not isinstance(not_after, int | float) or not math.isfinite(not_after):
        raise ValueError(f"not_after {not_after!r} is not a time")
    issuer = enrolled.get("issuer_root")
    return Enrollment(
        key_pem=_unb64(enrolled["key"]),
        chain_pem=tuple(_unb64(pem) for pem in chain),
        trust_bundle_pem=_unb64(enrolled["trust_bundle"]),
        not_after=float(not_after),
        issuer_root_der=_unb64(issuer) if issuer is not None else None,
    )


async def _run_child(command: Sequence[str], request: bytes) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(CHILD_TIMEOUT_SECONDS):
            stdout, stderr = await process.communicate(request)
    except TimeoutError:
        raise CertificateCallFailed(
            f"the enrollment process did not answer within {CHILD_TIMEOUT_SECONDS:.0f}s"
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
            f"the enrollment process exited with {process.returncode}: {tail or 'no output'}"
        ) from None
    if not isinstance(answer, dict):
        raise CertificateCallFailed("the enrollment process answered with something other than an object")
    return answer


# The child's side: everything below runs only in `python -m services.proxy.csr_child`.


async def _enroll(request: dict[str, Any]) -> dict[str, Any]:
    from services.citadel.client import CertificateRefused, CitadelClient
    from shared.identity.svid import IssuedCertificate, build_csr, enrollment_of, new_private_key

    spiffe_id = request["spiffe_id"]
    if not isinstance(spiffe_id, str):
        raise TypeError("spiffe_id is not a string")
    token: str | None = request.get("token") or None
    renew = request.get("renew_with")
    bundle = _unb64(request["trust_bundle"])
    key = new_private_key()
    csr = build_csr(key, spiffe_id)
    client = CitadelClient(request["address"], bundle, server_name=request["server_name"])
    renewal_refused: str | None = None
    try:
        issued: IssuedCertificate | None = None
        if renew is not None:
            try:
                issued = await client.create_certificate(
                    csr, client_chain_pem=_unb64(renew["chain"]), client_key_pem=_unb64(renew["key"])
                )
            except CertificateRefused as err:
                # A certificate citadel no longer accepts (its root was retired): bootstrap again with the token.
                if err.code != RENEWAL_REFUSED or token is None:
                    raise
                renewal_refused = str(err)
        if issued is None:
            if token is None:
                return {"failed": "no bootstrap token and no valid certificate to renew with"}
            issued = await client.create_certificate(csr, token=token)
    except CertificateRefused as err:
        return {"refused": {"reason": err.reason, "code": err.code}}
    except Exception as err:  # unavailable, bad answer: the parent retries with backoff
        return {"failed": str(err) or type(err).__name__}
    finally:
        await client.close()
    try:
        enrolled = enrollment_of(spiffe_id, key, issued, bundle)
    except CertificateError as err:
        return {"rejected": str(err)}
    if enrolled.not_after <= time.time():
        return {"rejected": "issued certificate has already expired"}
    return {"enrolled": answer_of(enrolled), "renewal_refused": renewal_refused}


def answer_of(enrolled: Enrollment) -> dict[str, Any]:
    """The `enrolled` part of a child's answer."""
    return {
        "key": _b64(enrolled.key_pem),
        "chain": [_b64(pem) for pem in enrolled.chain_pem],
        "trust_bundle": _b64(enrolled.trust_bundle_pem),
        "not_after": enrolled.not_after,
        "issuer_root": _b64(enrolled.issuer_root_der) if enrolled.issuer_root_der is not None else None,
    }


def main() -> int:
    try:
        request = json.loads(sys.stdin.buffer.read())
        if not isinstance(request, dict):
            raise TypeError("the request is not an object")
        answer = asyncio.run(_enroll(request))
    except (ValueError, KeyError, TypeError) as err:
        answer = {"failed": f"bad enrollment request: {err!r}"}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
