"""The certificate call's child process: failures come back as errors the renewal logic understands."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.local.processes import free_port
from services.proxy.csr_child import CertificateCallFailed, ChildCitadelClient

BUNDLE = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


async def test_an_unreachable_citadel_is_a_failure_to_retry_not_a_refusal() -> None:
    client = ChildCitadelClient(f"127.0.0.1:{free_port()}", BUNDLE)
    with pytest.raises(CertificateCallFailed) as raised:
        await client.create_certificate(b"-----BEGIN CERTIFICATE REQUEST-----\n", token="t")
    assert not hasattr(raised.value, "code")


def test_the_child_answers_a_malformed_request_with_a_failure() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.proxy.csr_child"], input=b"{not json", capture_output=True, timeout=60
    )
    assert result.returncode == 0
    assert b'"failed": "bad certificate request' in result.stdout


def test_an_empty_trust_bundle_is_refused_before_any_process_starts() -> None:
    with pytest.raises(ValueError, match="trust_bundle_pem is empty"):
        ChildCitadelClient("127.0.0.1:1", b"  ")
