"""Bootstrap tokens: ES256 JWTs signed by the CA key that let a new workload get its first certificate.

A token names one namespace + service account and is reusable until it expires (it must outlive a VM
reboot). `isthmus token revoke` voids one early: its `jti` goes on a denylist in NATS KV (revocation.py)
that `verify_token` consults through `revoked`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import jwt

from services.citadel.ca import CertificateAuthority
from shared.clock import Clock
from shared.identity import SpiffeId
from shared.identity.spiffe import SCHEME, InvalidSpiffeId

ALGORITHM = "ES256"
MAX_TOKEN_CHARS = 4096
CLOCK_SKEW_SECONDS = 60
"""A token issued on a machine whose clock is up to this far ahead is still accepted."""
REQUIRED_CLAIMS = ("iss", "sub", "ns", "sa", "exp", "iat", "jti")


class TokenRefused(Exception):
    """The token does not authenticate anyone; `reason` says why (never echoes the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def token_issuer(trust_domain: str) -> str:
    return f"{SCHEME}{trust_domain}"


def create_token(ca: CertificateAuthority, namespace: str, service_account: str, ttl_seconds: int, clock: Clock) -> str:
    """A token for `namespace`/`service_account` in the CA's trust domain, valid for `ttl_seconds`."""
    if ttl_seconds <= 0:
        raise ValueError(f"token ttl must be positive, got {ttl_seconds}")
    identity = SpiffeId(ca.trust_domain, namespace, service_account)
    now = int(clock.wall())
    claims = {
        "iss": token_issuer(ca.trust_domain),
        "sub": identity.uri,
        "ns": namespace,
        "sa": service_account,
        "iat": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, ca.root_key, algorithm=ALGORITHM, headers={"kid": _key_id(ca)})


def verify_token(
    ca: CertificateAuthority, token: str, clock: Clock, revoked: Callable[[str], bool] | None = None
) -> tuple[str, str]:
    """(namespace, service account) the token vouches for; TokenRefused for anything not valid right now.

    `revoked(jti)` says whether the token was revoked; it may raise to refuse every token (list unknown)."""
    if not token:
        raise TokenRefused("token is empty")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenRefused(f"token is {len(token)} characters; the limit is {MAX_TOKEN_CHARS}")
    claims = _decode(ca, token)
    for name in REQUIRED_CLAIMS:
        if name not in claims:
            raise TokenRefused(f"token has no {name!r} claim")
    if claims["iss"] != token_issuer(ca.trust_domain):
        raise TokenRefused(f"token issuer {claims['iss']!r} is not {token_issuer(ca.trust_domain)!r}")
    exp, iat = claims["exp"], claims["iat"]
    if not _is_number(exp) or not _is_number(iat):
        raise TokenRefused("token exp and iat must be numbers")
    now = clock.wall()
    if now >= exp:
        raise TokenRefused("token expired")
    if iat > now + CLOCK_SKEW_SECONDS:
        raise TokenRefused("token is issued in the future")
    namespace, service_account = claims["ns"], claims["sa"]
    if not isinstance(namespace, str) or not isinstance(service_account, str):
        raise TokenRefused("token ns and sa must be strings")
    try:
        identity = SpiffeId(ca.trust_domain, namespace, service_account)
    except InvalidSpiffeId as error:
        raise TokenRefused(f"token names an invalid identity: {error}") from None
    if claims["sub"] != identity.uri:
        raise TokenRefused("token sub does not match its ns and sa")
    if revoked is not None:
        try:
            is_revoked = revoked(str(claims["jti"]))
        except Exception as error:  # an unknown revocation state refuses (fail closed)
            raise TokenRefused(f"token revocation cannot be checked: {error}") from None
        if is_revoked:
            raise TokenRefused("token revoked")
    return namespace, service_account


def unverified_claims(token: str) -> dict[str, Any]:
    """The token's claims without checking anything (to find the jti and exp of a token being revoked)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as error:
        raise TokenRefused(f"token is malformed: {error}") from None
    if not isinstance(claims, dict) or not isinstance(claims.get("jti"), str):
        raise TokenRefused("token has no 'jti' claim")
    return claims


def _decode(ca: CertificateAuthority, token: str) -> dict[str, Any]:
    # Expiry is checked against the injected clock afterwards, not PyJWT's wall clock.
    options: Any = {"verify_signature": True, "verify_exp": False, "verify_iat": False, "verify_nbf": False}
    claims: Any = None
    for key in ca.token_keys():  # the current CA's key, then those of replaced CAs still trusted
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], options=options)
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidAlgorithmError:
            raise TokenRefused(f"token is not signed with {ALGORITHM}") from None
        except jwt.InvalidTokenError as error:
            raise TokenRefused(f"token is malformed: {error}") from None
    else:
        raise TokenRefused("token signature does not verify against this citadel's CA")
    if not isinstance(claims, dict):
        raise TokenRefused("token payload is not a JSON object")
    return claims


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _key_id(ca: CertificateAuthority) -> str:
    return ca.signing_key_id().hex()
