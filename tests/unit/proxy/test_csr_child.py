"""The enrollment child process: its answers, garbage included, become errors the renewal logic understands."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
from typing import Any

import pytest

from services.local.processes import free_port
from services.proxy import csr_child
from services.proxy.csr_child import (
    CertificateCallFailed,
    CertificateCallRefused,
    EnrollmentRequest,
    enroll_in_child,
)
from shared.identity.enrollment import CertificateError

BUNDLE = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
SPIFFE = "spiffe://cluster.local/ns/default/sa/reviews"


def request(token: str | None = "t", address: str = "127.0.0.1:1", bundle: bytes = BUNDLE) -> EnrollmentRequest:
    return EnrollmentRequest(address, "citadel", bundle, SPIFFE, token)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GOOD = {
    "key": b64(b"-----BEGIN PRIVATE KEY-----\n"),
    "chain": [b64(b"-----BEGIN CERTIFICATE-----\nleaf\n")],
    "trust_bundle": b64(BUNDLE),
    "not_after": 2_000_000_000.0,
    "issuer_root": b64(b"\x30\x82root"),
}


@pytest.fixture
def child_answers(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Replaces the child with one that reads the request and prints `output` as it is."""

    def answer_with(output: str) -> None:
        script = f"import sys; sys.stdin.buffer.read(); sys.stdout.write({output!r})"
        monkeypatch.setattr(csr_child, "CHILD_COMMAND", (sys.executable, "-c", script))

    return answer_with


async def test_an_unreachable_citadel_is_a_failure_to_retry_not_a_refusal() -> None:
    with pytest.raises(CertificateCallFailed) as raised:
        await enroll_in_child(request(address=f"127.0.0.1:{free_port()}"))
    assert not hasattr(raised.value, "code")


def test_the_child_answers_a_malformed_request_with_a_failure() -> None:
    for garbage in (b"{not json", b"[1, 2]", b'{"address": "127.0.0.1:1"}'):
        result = subprocess.run(
            [sys.executable, "-m", "services.proxy.csr_child"], input=garbage, capture_output=True, timeout=60
        )
        assert result.returncode == 0
        assert b'"failed": "bad enrollment request' in result.stdout


async def test_an_empty_trust_bundle_is_refused_before_any_process_starts(child_answers: Any) -> None:
    child_answers("this would be garbage")
    with pytest.raises(ValueError, match="trust_bundle_pem is empty"):
        await enroll_in_child(request(bundle=b"  "))


async def test_a_well_formed_answer_is_the_enrollment(child_answers: Any) -> None:
    child_answers(json.dumps({"enrolled": GOOD, "renewal_refused": None}))
    enrolled = await enroll_in_child(request())
    assert enrolled.key_pem == b"-----BEGIN PRIVATE KEY-----\n"
    assert enrolled.chain_pem == (b"-----BEGIN CERTIFICATE-----\nleaf\n",)
    assert enrolled.trust_bundle_pem == BUNDLE
    assert enrolled.not_after == 2_000_000_000.0
    assert enrolled.issuer_root_der == b"\x30\x82root"


async def test_a_refusal_keeps_citadels_code(child_answers: Any) -> None:
    child_answers(json.dumps({"refused": {"reason": "token is for another identity", "code": "PERMISSION_DENIED"}}))
    with pytest.raises(CertificateCallRefused) as raised:
        await enroll_in_child(request())
    assert raised.value.code == "PERMISSION_DENIED"
    assert raised.value.reason == "token is for another identity"


async def test_a_rejected_certificate_is_a_certificate_error(child_answers: Any) -> None:
    child_answers(json.dumps({"rejected": "issued certificate names None, expected ..."}))
    with pytest.raises(CertificateError, match="names None"):
        await enroll_in_child(request())


def _with(**changes: Any) -> str:
    return json.dumps({"enrolled": {**GOOD, **changes}})


@pytest.mark.parametrize(
    "output",
    [
        pytest.param("", id="nothing"),
        pytest.param("Traceback (most recent call last):", id="a crash"),
        pytest.param("[]", id="not an object"),
        pytest.param("{}", id="no outcome"),
        pytest.param(json.dumps({"enrolled": "yes"}), id="enrolled is no object"),
        pytest.param(json.dumps({"enrolled": {k: v for k, v in GOOD.items() if k != "key"}}), id="no key"),
        pytest.param(_with(chain=[]), id="empty chain"),
        pytest.param(_with(chain=b64(b"pem")), id="chain not a list"),
        pytest.param(_with(chain=[5]), id="chain entry not text"),
        pytest.param(_with(key="not base64!"), id="key not base64"),
        pytest.param(_with(not_after="tomorrow"), id="not_after text"),
        pytest.param(_with(not_after=True), id="not_after boolean"),
        pytest.param(_with(not_after=math.inf), id="not_after infinite"),
        pytest.param(_with(issuer_root=7), id="issuer not text"),
        pytest.param(json.dumps({"refused": "no"}), id="refusal without code"),
    ],
)
async def test_garbage_from_the_child_is_a_failure(child_answers: Any, output: str) -> None:
    child_answers(output)
    with pytest.raises(CertificateCallFailed):
        await enroll_in_child(request())
