"""RequestAuthentication `fromCookies` decisions: a RequestAuthentication (as YAML) x a request's headers and
query -> request principal, no principal, or 401, with Envoy's jwt_authn semantics."""

from __future__ import annotations

import json

import jwt
import pydantic
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from multidict import CIMultiDict

from services.proxy.jwt_authn import JwksCache, JwtAuthenticator, Unauthenticated
from shared.clock import FakeClock
from shared.model import parse_resource
from shared.model.proxy_config import NamedJwtRule
from shared.model.resources import RequestAuthentication

ISSUER = "https://idp.example"
NOW = 1_800_000_000.0
KEY = ec.generate_private_key(ec.SECP256R1())
JWK = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key())) | {"kid": "k1", "alg": "ES256"}
GOOD = jwt.encode({"iss": ISSUER, "sub": "alice", "exp": NOW + 600}, KEY, algorithm="ES256", headers={"kid": "k1"})
EXPIRED = jwt.encode({"iss": ISSUER, "sub": "alice", "exp": NOW - 3600}, KEY, algorithm="ES256", headers={"kid": "k1"})
ALICE = f"{ISSUER}/alice"
DENIED = "401"


def request_authentication(locations: str) -> JwtAuthenticator:
    text = f"""
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: session, namespace: shop}}
spec:
  jwtRules:
  - issuer: {ISSUER}
    jwks: '{json.dumps({"keys": [JWK]})}'
    {locations}
"""
    resource = parse_resource(yaml.safe_load(text))
    assert isinstance(resource, RequestAuthentication)
    clock = FakeClock(NOW)
    rules = [NamedJwtRule(name="shop/session", rule=rule) for rule in resource.spec.jwt_rules]
    return JwtAuthenticator(rules, JwksCache(clock), clock)


async def decide(auth: JwtAuthenticator, headers: dict[str, str], query: str = "") -> str | None:
    try:
        return (await auth.authenticate(CIMultiDict(headers), query)).principal
    except Unauthenticated:
        return DENIED


COOKIES_ONLY = "fromCookies: [session]"
COOKIES_AND_HEADER = "fromCookies: [session, token]\n    fromHeaders: [{name: x-jwt}]"


@pytest.mark.parametrize(
    ("locations", "headers", "query", "decision"),
    [
        (COOKIES_ONLY, {"Cookie": f"session={GOOD}"}, "", ALICE),
        (COOKIES_ONLY, {"Cookie": f"theme=dark; session={GOOD}; lang=en"}, "", ALICE),
        (COOKIES_ONLY, {"Cookie": f'session="{GOOD}"'}, "", ALICE),  # a quoted cookie value
        (COOKIES_ONLY, {"Cookie": f"session={EXPIRED}"}, "", DENIED),
        (COOKIES_ONLY, {"Cookie": "session=not-a-jwt"}, "", DENIED),
        (COOKIES_ONLY, {"Cookie": f"other={GOOD}"}, "", None),  # an unnamed cookie is not a location
        (COOKIES_ONLY, {"Cookie": f"xsession={GOOD}"}, "", None),
        (COOKIES_ONLY, {"Authorization": f"Bearer {EXPIRED}"}, "", None),  # explicit locations: no defaults
        (COOKIES_ONLY, {}, f"access_token={EXPIRED}", None),
        (COOKIES_ONLY, {}, "", None),
        (COOKIES_AND_HEADER, {"Cookie": f"token={GOOD}"}, "", ALICE),
        (COOKIES_AND_HEADER, {"x-jwt": GOOD, "Cookie": f"session={EXPIRED}"}, "", DENIED),  # every token counts
        ("fromHeaders: [{name: x-jwt}]", {"Cookie": f"session={EXPIRED}"}, "", None),  # cookies only when named
    ],
)
async def test_from_cookies(locations: str, headers: dict[str, str], query: str, decision: str | None) -> None:
    assert await decide(request_authentication(locations), headers, query) == decision


async def test_the_cookie_reaches_the_app_as_it_came() -> None:
    headers = CIMultiDict({"Cookie": f"theme=dark; session={GOOD}"})
    auth = request_authentication(COOKIES_ONLY)
    assert (await auth.authenticate(headers, "")).principal == ALICE
    assert headers["Cookie"] == f"theme=dark; session={GOOD}"


@pytest.mark.parametrize("name", ["", "two words", "a;b", "a=b"])
def test_a_cookie_name_that_is_not_one_is_refused(name: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="cookie"):
        request_authentication(f"fromCookies: [{json.dumps(name)}]")
