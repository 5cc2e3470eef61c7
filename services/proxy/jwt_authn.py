"""Inbound request authentication (RequestAuthentication): JWT found -> verified -> request principal and claims.

Runs after peer authentication and before authorization, with Envoy's jwt_authn semantics as Istio configures
them:
- tokens are looked for in every rule's locations (`fromHeaders` with their prefix, `fromParams`,
  `fromCookies`); a rule without locations uses `Authorization: Bearer <token>` and the `access_token` query
  parameter;
- no token at all: the request passes with no request principal (an AuthorizationPolicy decides);
- a token that is malformed, signed by no key of its issuer's key set, expired (exp), not yet valid (nbf),
  for another audience, or from an issuer no rule names: 401 `Jwt verification fails`, counted;
- success: request principal `<iss>/<sub>`, the payload's claims for `request.auth.claims[...]`;
  `outputPayloadToHeader` gets the base64url payload, `outputClaimToHeaders` single claims; the token is
  removed from its header unless `forwardOriginalToken` (a cookie is passed on as it came, as Envoy does);
- JWKS: inline `jwks` is parsed once per config version; `jwksUri` is fetched over HTTP(S) and cached per
  proxy (across config versions) for JWKS_CACHE_SECONDS, re-fetched early when a token names an unknown key
  id (at most every JWKS_MIN_REFETCH_SECONDS); when no key set can be had every token fails (fail closed).
Time (exp, nbf, cache age) comes from the injected Clock with JWT_CLOCK_SKEW seconds of leeway.
PyJWT (and with it the `cryptography` package, megabytes of resident memory) is imported only once a rule is
compiled, so a sidecar without RequestAuthentication never loads it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import aiohttp
from multidict import CIMultiDict

from services.proxy.errors import ProxyError
from shared.clock import SYSTEM_CLOCK, Clock
from shared.model.proxy_config import NamedJwtRule
from shared.model.request_authentication import JWTHeader, JWTRule

if TYPE_CHECKING:
    import jwt

log = logging.getLogger(__name__)

DEFAULT_HEADER = JWTHeader(name="Authorization", prefix="Bearer ")
DEFAULT_PARAM = "access_token"
JWKS_CACHE_SECONDS = 300.0
JWKS_MIN_REFETCH_SECONDS = 10.0
JWKS_FETCH_TIMEOUT = 5.0
JWT_CLOCK_SKEW = 60.0
VERIFICATION_FAILED = "Jwt verification fails"
ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA")


class Unauthenticated(ProxyError):
    status = 401
    flag = "UAEX"


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The outcome for one request: no token (principal None) or a verified one."""

    principal: str | None = None
    claims: Mapping[str, Any] | None = None


NOBODY = Authenticated()


class JwksCache:
    """Key sets fetched from jwksUri, shared by every config version of one proxy."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._sets: dict[str, tuple[float, jwt.PyJWKSet]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def key_set(self, uri: str, kid: str | None, fetch_timeout: float) -> jwt.PyJWKSet | None:
        now = self._clock.monotonic()
        cached = self._sets.get(uri)
        if cached is not None and not self._stale(cached, kid, now):
            return cached[1]
        lock = self._locks.setdefault(uri, asyncio.Lock())
        async with lock:
            cached = self._sets.get(uri)
            if cached is not None and not self._stale(cached, kid, self._clock.monotonic()):
                return cached[1]
            try:
                fetched = await self._fetch(uri, fetch_timeout)
            except Exception as err:  # keep the old keys, if any: a JWKS outage must not log everyone out
                log.warning("JWKS %s could not be fetched: %s", uri, err)
                return cached[1] if cached is not None else None
            self._sets[uri] = (self._clock.monotonic(), fetched)
            return fetched

    def _stale(self, cached: tuple[float, jwt.PyJWKSet], kid: str | None, now: float) -> bool:
        fetched_at, keys = cached
        if now - fetched_at >= JWKS_CACHE_SECONDS:
            return True
        known = kid is None or any(key.key_id == kid for key in keys.keys)
        return not known and now - fetched_at >= JWKS_MIN_REFETCH_SECONDS

    async def _fetch(self, uri: str, fetch_timeout: float) -> jwt.PyJWKSet:
        import jwt  # on first use (module docstring)

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self.fetches += 1
        async with self._session.get(uri, timeout=aiohttp.ClientTimeout(total=fetch_timeout)) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            return jwt.PyJWKSet.from_dict(json.loads(await response.read()))


@dataclass(frozen=True)
class _CompiledRule:
    source: str
    rule: JWTRule
    headers: tuple[JWTHeader, ...]
    params: tuple[str, ...]
    cookies: tuple[str, ...]
    inline: jwt.PyJWKSet | None


def _compile(named: NamedJwtRule) -> _CompiledRule:
    import jwt  # on first use (module docstring)

    rule = named.rule
    defaults = not rule.from_headers and not rule.from_params and not rule.from_cookies
    headers = (DEFAULT_HEADER,) if defaults else tuple(rule.from_headers)
    params = (DEFAULT_PARAM,) if defaults else tuple(rule.from_params)
    inline = None
    if rule.jwks is not None:
        try:
            inline = jwt.PyJWKSet.from_dict(json.loads(rule.jwks))
        except (jwt.PyJWKError, jwt.PyJWKSetError, ValueError) as err:
            raise ValueError(f"{named.name}: jwtRules[issuer={rule.issuer}].jwks: {err}") from err
    return _CompiledRule(named.name, rule, headers, params, tuple(rule.from_cookies), inline)


@dataclass(frozen=True, slots=True)
class _Found:
    token: str
    header: str | None
    """Header it came from (None: a query parameter or a cookie, left in place)."""


def _cookie_values(headers: CIMultiDict[str], names: frozenset[str]) -> list[str]:
    """Values of the named cookies in every Cookie header (`a=1; b="2"`), quotes removed, in order."""
    values: list[str] = []
    for line in headers.getall("Cookie", []):
        for pair in line.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name in names:
                value = value.strip()
                values.append(value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value)
    return values


def _payload_segment(token: str) -> str:
    parts = token.split(".")
    return parts[1] if len(parts) == 3 else ""


class JwtAuthenticator:
    """The RequestAuthentication rules of one config version; `authenticate` is called per inbound request."""

    def __init__(self, rules: Iterable[NamedJwtRule], cache: JwksCache, clock: Clock = SYSTEM_CLOCK) -> None:
        self._rules = tuple(_compile(rule) for rule in rules)
        self._by_issuer = {rule.rule.issuer: rule for rule in self._rules}
        self._cache = cache
        self._clock = clock
        self._headers = tuple({(h.name.lower(), h.prefix) for rule in self._rules for h in rule.headers})
        self._params = frozenset(p for rule in self._rules for p in rule.params)
        self._cookies = frozenset(c for rule in self._rules for c in rule.cookies)

    @property
    def active(self) -> bool:
        return bool(self._rules)

    def _find(self, headers: CIMultiDict[str], query: str) -> list[_Found]:
        found: list[_Found] = []
        for name, prefix in self._headers:
            for value in headers.getall(name, []):
                if value.lower().startswith(prefix.lower()):
                    found.append(_Found(value[len(prefix) :].strip(), name))
                elif not prefix:
                    found.append(_Found(value.strip(), name))
        if self._params and query:
            for key, value in parse_qsl(query, keep_blank_values=True):
                if key in self._params:
                    found.append(_Found(value, None))
        if self._cookies:
            found.extend(_Found(value, None) for value in _cookie_values(headers, self._cookies))
        return found

    async def authenticate(self, headers: CIMultiDict[str], query: str) -> Authenticated:
        """Verifies every token found; on success edits `headers` (outputs, token removal). Raises Unauthenticated."""
        if not self._rules:
            return NOBODY
        found = self._find(headers, query)
        if not found:
            return NOBODY
        result = NOBODY
        for token in found:
            rule, claims = await self._verify(token.token)
            result = Authenticated(f"{claims.get('iss')}/{claims.get('sub')}", claims)
            self._outputs(rule, token, claims, headers)
        return result

    async def _verify(self, token: str) -> tuple[_CompiledRule, dict[str, Any]]:
        import jwt  # loaded by _compile already: a lookup in sys.modules

        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as err:
            raise Unauthenticated(f"{VERIFICATION_FAILED}: malformed token") from err
        issuer = unverified.get("iss")
        rule = self._by_issuer.get(issuer) if isinstance(issuer, str) else None
        if rule is None:
            raise Unauthenticated(f"{VERIFICATION_FAILED}: issuer {issuer!r} is not configured")
        kid = header.get("kid")
        keys = rule.inline
        if keys is None and rule.rule.jwks_uri is not None:
            timeout = rule.rule.timeout or JWKS_FETCH_TIMEOUT
            keys = await self._cache.key_set(rule.rule.jwks_uri, kid, timeout)
        if keys is None:
            raise Unauthenticated(f"{VERIFICATION_FAILED}: no key set for issuer {issuer!r}")
        claims = self._check_signature(token, header, keys)
        self._check_claims(rule.rule, claims)
        return rule, claims

    def _check_signature(self, token: str, header: Mapping[str, Any], keys: jwt.PyJWKSet) -> dict[str, Any]:
        import jwt

        kid = header.get("kid")
        candidates = [key for key in keys.keys if kid is None or key.key_id == kid]
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise Unauthenticated(f"{VERIFICATION_FAILED}: algorithm {algorithm!r} is not accepted")
        for key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key.key,
                    algorithms=[algorithm],
                    options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
                )
                return claims
            except jwt.PyJWTError:
                continue
        raise Unauthenticated(f"{VERIFICATION_FAILED}: signature does not verify")

    def _check_claims(self, rule: JWTRule, claims: Mapping[str, Any]) -> None:
        now = self._clock.wall()
        exp = claims.get("exp")
        if exp is not None and (not isinstance(exp, int | float) or now > exp + JWT_CLOCK_SKEW):
            raise Unauthenticated("Jwt is expired")
        nbf = claims.get("nbf")
        if nbf is not None and (not isinstance(nbf, int | float) or now + JWT_CLOCK_SKEW < nbf):
            raise Unauthenticated("Jwt not yet valid")
        if rule.audiences:
            aud = claims.get("aud")
            audiences = [aud] if isinstance(aud, str) else list(aud) if isinstance(aud, list) else []
            if not set(audiences) & set(rule.audiences):
                raise Unauthenticated("Audiences in Jwt are not allowed")

    def _outputs(
        self, rule: _CompiledRule, token: _Found, claims: Mapping[str, Any], headers: CIMultiDict[str]
    ) -> None:
        if not rule.rule.forward_original_token and token.header is not None:
            headers.popall(token.header, None)
        if rule.rule.output_payload_to_header:
            headers[rule.rule.output_payload_to_header] = _payload_segment(token.token) or base64.urlsafe_b64encode(
                json.dumps(claims).encode()
            ).decode().rstrip("=")
        for output in rule.rule.output_claim_to_headers:
            value = claims.get(output.claim)
            if isinstance(value, str | int | float | bool):
                headers[output.header] = str(value).lower() if isinstance(value, bool) else str(value)
