"""What the sidecar asks its enrollment child for: renewal with a still-valid certificate, else the token."""

from __future__ import annotations

import pytest

from services.proxy import citadel_source
from services.proxy.citadel_source import CitadelEnroller
from services.proxy.csr_child import EnrollmentRequest
from services.proxy.tls import WorkloadIdentity
from shared.clock import FakeClock
from shared.identity.enrollment import Enrollment

SPIFFE = "spiffe://cluster.local/ns/default/sa/reviews"
BUNDLE = b"-----BEGIN CERTIFICATE-----\nroots\n-----END CERTIFICATE-----\n"
ANSWER = Enrollment(b"key", (b"leaf",), BUNDLE, 2_000_000.0, None)


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[EnrollmentRequest]:
    sent: list[EnrollmentRequest] = []

    async def child(request: EnrollmentRequest) -> Enrollment:
        sent.append(request)
        return ANSWER

    monkeypatch.setattr(citadel_source, "enroll_in_child", child)
    return sent


def current(not_after: float) -> WorkloadIdentity:
    return WorkloadIdentity(SPIFFE, b"current key", (b"leaf\n", b"intermediate\n"), BUNDLE, not_after)


async def test_first_enrollment_uses_the_token(requests: list[EnrollmentRequest]) -> None:
    enroller = CitadelEnroller("citadel:15012", lambda: BUNDLE, "token", FakeClock())
    assert await enroller.enroll(SPIFFE, None) == ANSWER
    [sent] = requests
    assert (sent.address, sent.server_name, sent.trust_bundle_pem) == ("citadel:15012", "citadel", BUNDLE)
    assert (sent.spiffe_id, sent.token, sent.renew_chain_pem, sent.renew_key_pem) == (SPIFFE, "token", None, None)


async def test_a_valid_certificate_renews_and_the_token_stays_as_fallback(requests: list[EnrollmentRequest]) -> None:
    clock = FakeClock()
    enroller = CitadelEnroller("citadel:15012", lambda: BUNDLE, "token", clock)
    await enroller.enroll(SPIFFE, current(clock.wall() + 10))
    [sent] = requests
    assert sent.renew_chain_pem == b"leaf\nintermediate\n" and sent.renew_key_pem == b"current key"
    assert sent.token == "token"
    assert "current key" not in repr(sent) and "token" not in repr(sent)  # secrets stay out of logs


async def test_an_expired_certificate_is_not_offered_as_proof(requests: list[EnrollmentRequest]) -> None:
    clock = FakeClock()
    enroller = CitadelEnroller("citadel:15012", lambda: BUNDLE, "token", clock)
    await enroller.enroll(SPIFFE, current(clock.wall()))
    [sent] = requests
    assert sent.renew_chain_pem is None and sent.renew_key_pem is None and sent.token == "token"


async def test_without_token_or_valid_certificate_no_child_is_started(requests: list[EnrollmentRequest]) -> None:
    clock = FakeClock()
    enroller = CitadelEnroller("citadel:15012", lambda: BUNDLE, None, clock)
    with pytest.raises(RuntimeError, match="no bootstrap token"):
        await enroller.enroll(SPIFFE, current(clock.wall() - 1))
    assert requests == []
