"""RequestAuthentication: which JWTs a workload's inbound listener verifies (issuer, audiences, keys, locations).

A request with a token that fails verification is refused (401); a request without any token passes with no
request principal, so an AuthorizationPolicy decides whether that is enough. Exactly one of `jwksUri` and
`jwks` gives the keys (istiod would derive `jwksUri` from OpenID discovery; Isthmus asks for it explicitly).
"""

from __future__ import annotations

import json

from pydantic import Field, field_validator, model_validator

from shared.model.base import Duration, Spec, WorkloadSelector


class JWTHeader(Spec):
    name: str = Field(min_length=1)
    prefix: str = ""


class ClaimToHeader(Spec):
    header: str = Field(min_length=1)
    claim: str = Field(min_length=1)


class JWTRule(Spec):
    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(default_factory=list)
    jwks_uri: str | None = None
    jwks: str | None = None
    from_headers: list[JWTHeader] = Field(default_factory=list)
    from_params: list[str] = Field(default_factory=list)
    from_cookies: list[str] = Field(default_factory=list)
    """Cookie names to read the token from (Istio 1.22+); the cookie is passed on as it came."""
    output_payload_to_header: str | None = None
    output_claim_to_headers: list[ClaimToHeader] = Field(default_factory=list)
    forward_original_token: bool = False
    timeout: Duration | None = None

    @field_validator("jwks_uri")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must be an http:// or https:// URL")
        return value

    @field_validator("from_cookies")
    @classmethod
    def _cookie_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name or any(c in name for c in ' \t;,="()<>@:\\/[]?{}') or not name.isprintable():
                raise ValueError(f"{name!r} is not a cookie name")
        return names

    @field_validator("jwks")
    @classmethod
    def _inline(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            keys = json.loads(value)
        except ValueError as err:
            raise ValueError(f"jwks is not JSON: {err}") from err
        if not isinstance(keys, dict) or not isinstance(keys.get("keys"), list):
            raise ValueError('jwks must be a JSON Web Key Set: {"keys": [...]}')
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> JWTRule:
        if (self.jwks_uri is None) == (self.jwks is None):
            raise ValueError("exactly one of jwksUri and jwks must be set")
        return self


class RequestAuthenticationSpec(Spec):
    selector: WorkloadSelector | None = None
    jwt_rules: list[JWTRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_issuers(self) -> RequestAuthenticationSpec:
        issuers = [rule.issuer for rule in self.jwt_rules]
        duplicates = sorted({issuer for issuer in issuers if issuers.count(issuer) > 1})
        if duplicates:
            raise ValueError(f"jwtRules: issuer {duplicates[0]!r} appears more than once")
        return self
