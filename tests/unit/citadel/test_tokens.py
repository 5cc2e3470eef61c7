"""Bootstrap tokens verify only when signed by this CA, unexpired on the injected clock, and well-formed."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from services.citadel.ca import CertificateAuthority
from services.citadel.tokens import TokenRefused, create_token, token_issuer, verify_token
from shared.clock import FakeClock

START = 1_800_000_000.0


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("cluster.local")


def claims(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "iss": token_issuer("cluster.local"),
        "sub": "spiffe://cluster.local/ns/shop/sa/web",
        "ns": "shop",
        "sa": "web",
        "iat": int(START),
        "exp": int(START) + 3600,
        "jti": "j1",
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def test_token_round_trips_to_namespace_and_service_account(ca: CertificateAuthority) -> None:
    clock = FakeClock(start=START)
    token = create_token(ca, "shop", "web", 3600, clock)
    assert verify_token(ca, token, clock) == ("shop", "web")
    payload = jwt.decode(token, options={"verify_signature": False})
    assert set(payload) == {"iss", "sub", "ns", "sa", "exp", "iat", "jti"}
    assert jwt.get_unverified_header(token)["alg"] == "ES256"


async def test_token_expires_on_the_injected_clock(ca: CertificateAuthority) -> None:
    clock = FakeClock(start=START)
    token = create_token(ca, "shop", "web", 3600, clock)
    await clock.advance(3599)
    assert verify_token(ca, token, clock) == ("shop", "web")
    await clock.advance(1)
    with pytest.raises(TokenRefused, match="expired"):
        verify_token(ca, token, clock)


def test_token_from_another_ca_is_refused(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.create("cluster.local")
    token = create_token(other, "shop", "web", 3600, FakeClock(start=START))
    with pytest.raises(TokenRefused, match="signature"):
        verify_token(ca, token, FakeClock(start=START))


def test_edited_payload_breaks_the_signature(ca: CertificateAuthority) -> None:
    header, _, signature = create_token(ca, "shop", "web", 3600, FakeClock(start=START)).split(".")
    forged = base64.urlsafe_b64encode(json.dumps(claims(ns="kube-system", sa="admin")).encode()).rstrip(b"=")
    with pytest.raises(TokenRefused, match="signature"):
        verify_token(ca, f"{header}.{forged.decode()}.{signature}", FakeClock(start=START))


def test_unsigned_and_symmetric_tokens_are_refused(ca: CertificateAuthority) -> None:
    unsigned = jwt.encode(claims(), key="", algorithm="none")
    with pytest.raises(TokenRefused, match="ES256"):
        verify_token(ca, unsigned, FakeClock(start=START))
    symmetric = jwt.encode(claims(), "a-shared-secret-of-at-least-32-bytes!!", algorithm="HS256")
    with pytest.raises(TokenRefused, match="ES256"):
        verify_token(ca, symmetric, FakeClock(start=START))


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"iss": "spiffe://example.org"}, "issuer"),
        ({"jti": None}, "no 'jti' claim"),
        ({"sub": "spiffe://cluster.local/ns/shop/sa/db"}, "sub does not match"),
        ({"ns": "bad/ns"}, "invalid identity"),
        ({"sa": 7}, "must be strings"),
        ({"exp": "tomorrow"}, "must be numbers"),
        ({"iat": int(START) + 3000}, "in the future"),
    ],
)
def test_malformed_claims_are_refused(ca: CertificateAuthority, overrides: dict[str, object], reason: str) -> None:
    token = jwt.encode(claims(**overrides), ca.root_key, algorithm="ES256")
    with pytest.raises(TokenRefused, match=reason):
        verify_token(ca, token, FakeClock(start=START))


@pytest.mark.parametrize(("garbage", "reason"), [("", "empty"), ("not-a-jwt", "malformed"), ("a" * 5000, "limit")])
def test_garbage_is_refused(ca: CertificateAuthority, garbage: str, reason: str) -> None:
    with pytest.raises(TokenRefused, match=reason):
        verify_token(ca, garbage, FakeClock(start=START))


def test_create_rejects_bad_input(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="ttl"):
        create_token(ca, "shop", "web", 0, FakeClock())
    with pytest.raises(ValueError, match="namespace"):
        create_token(ca, "bad/ns", "web", 60, FakeClock())
