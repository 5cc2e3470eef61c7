"""Request authentication: token locations, signature, exp/nbf on an injected clock, audiences, header outputs."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from multidict import CIMultiDict

from services.proxy.jwt_authn import NOBODY, JwksCache, JwtAuthenticator, Unauthenticated
from shared.clock import FakeClock
from shared.model.proxy_config import NamedJwtRule

ISSUER = "https://idp.example"
NOW = 1_800_000_000.0
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def jwks(key: ec.EllipticCurvePrivateKey = KEY, kid: str = "k1") -> str:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": "ES256", "use": "sig"})
    return json.dumps({"keys": [jwk]})


def token(key: ec.EllipticCurvePrivateKey = KEY, kid: str = "k1", **claims: Any) -> str:
    body = {"iss": ISSUER, "sub": "alice", "exp": NOW + 600, **claims}
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": kid})


def authenticator(clock: FakeClock | None = None, **rule: Any) -> JwtAuthenticator:
    named = NamedJwtRule.model_validate({"name": "shop/jwt", "rule": {"issuer": ISSUER, "jwks": jwks(), **rule}})
    clock = clock or FakeClock(NOW)
    return JwtAuthenticator([named], JwksCache(clock), clock)


def bearer(value: str) -> CIMultiDict[str]:
    return CIMultiDict({"Authorization": f"Bearer {value}"})


async def test_no_token_passes_without_principal() -> None:
    assert await authenticator().authenticate(CIMultiDict(), "") is NOBODY


async def test_valid_token_gives_iss_sub_and_claims_and_is_removed() -> None:
    headers = bearer(token(groups=["admins"]))
    result = await authenticator().authenticate(headers, "")
    assert result.principal == f"{ISSUER}/alice"
    assert result.claims is not None and result.claims["groups"] == ["admins"]
    assert "Authorization" not in headers


async def test_forward_original_token_and_outputs() -> None:
    raw = token(tenant="acme")
    headers = bearer(raw)
    auth = authenticator(
        forwardOriginalToken=True,
        outputPayloadToHeader="x-jwt-payload",
        outputClaimToHeaders=[{"header": "x-tenant", "claim": "tenant"}],
    )
    await auth.authenticate(headers, "")
    assert headers["Authorization"] == f"Bearer {raw}"
    payload = headers["x-jwt-payload"]
    assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["tenant"] == "acme"
    assert headers["x-tenant"] == "acme"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not-a-jwt", "Jwt verification fails"),
        (token(OTHER_KEY), "signature does not verify"),
        (token(iss="https://evil"), "is not configured"),
        (token(exp=NOW - 3600), "Jwt is expired"),
        (token(nbf=NOW + 3600), "Jwt not yet valid"),
    ],
)
async def test_bad_tokens_are_refused(raw: str, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message) as caught:
        await authenticator().authenticate(bearer(raw), "")
    assert caught.value.status == 401


async def test_expiry_follows_the_injected_clock() -> None:
    clock = FakeClock(NOW)
    auth = authenticator(clock)
    raw = token(exp=NOW + 10)
    assert (await auth.authenticate(bearer(raw), "")).principal is not None
    await clock.advance(100)  # past exp plus the allowed skew
    with pytest.raises(Unauthenticated, match="expired"):
        await auth.authenticate(bearer(raw), "")


async def test_audiences() -> None:
    auth = authenticator(audiences=["payments"])
    assert (await auth.authenticate(bearer(token(aud=["shop", "payments"])), "")).principal is not None
    with pytest.raises(Unauthenticated, match="Audiences"):
        await auth.authenticate(bearer(token(aud="shop")), "")
    with pytest.raises(Unauthenticated, match="Audiences"):
        await auth.authenticate(bearer(token()), "")


async def test_custom_header_and_query_parameter_locations() -> None:
    auth = authenticator(fromHeaders=[{"name": "x-jwt", "prefix": "Token "}], fromParams=["jwt"])
    headers: CIMultiDict[str] = CIMultiDict({"x-jwt": f"Token {token()}"})
    assert (await auth.authenticate(headers, "")).principal == f"{ISSUER}/alice"
    assert (await auth.authenticate(CIMultiDict(), f"a=1&jwt={token()}")).principal == f"{ISSUER}/alice"
    # the default location is not looked at once locations are given
    assert await auth.authenticate(bearer(token()), "") is NOBODY


async def test_default_query_parameter() -> None:
    assert (await authenticator().authenticate(CIMultiDict(), f"access_token={token()}")).principal is not None


def test_unusable_inline_key_set_is_a_build_error() -> None:
    bad = json.dumps({"keys": [{"kty": "nope"}]})
    named = NamedJwtRule.model_validate({"name": "shop/jwt", "rule": {"issuer": ISSUER, "jwks": bad}})
    with pytest.raises(ValueError, match="shop/jwt"):
        JwtAuthenticator([named], JwksCache(FakeClock()), FakeClock())
