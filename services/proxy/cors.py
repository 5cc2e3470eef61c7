"""Outbound filter right after routing: the route's CORS policy, precomputed per config version.

Envoy's CORS filter as Istio configures it: a preflight (OPTIONS with Origin and
Access-Control-Request-Method) from an allowed origin is answered by the proxy with 200 and the
Access-Control-Allow-* headers, never reaching the app; a preflight from another origin is forwarded
like any request (Istio's default `unmatchedPreflights: FORWARD`), or with `IGNORE` answered 200 by the proxy
without any CORS header (Envoy's `forward_not_matching_preflights: false`). Other requests from an allowed origin
go upstream, and the response gets Access-Control-Allow-Origin (the request's origin, or `*` when the
policy allows every origin without credentials), Access-Control-Allow-Credentials and
Access-Control-Expose-Headers. Origins are matched with StringMatch (exact, prefix, regex);
`exact: "*"` allows any origin.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.model.string_match import StringMatch
from shared.model.virtual_service import CorsPolicy, UnmatchedPreflights

ORIGIN = "origin"
REQUEST_METHOD = "access-control-request-method"
ALLOW_ORIGIN = "Access-Control-Allow-Origin"
ALLOW_METHODS = "Access-Control-Allow-Methods"
ALLOW_HEADERS = "Access-Control-Allow-Headers"
ALLOW_CREDENTIALS = "Access-Control-Allow-Credentials"
EXPOSE_HEADERS = "Access-Control-Expose-Headers"
MAX_AGE = "Access-Control-Max-Age"


@dataclass(frozen=True, slots=True)
class CompiledCors:
    origins: tuple[StringMatch, ...]
    any_origin: bool
    preflight_headers: tuple[tuple[str, str], ...]
    """Headers of a preflight answer other than Allow-Origin."""
    response_headers: tuple[tuple[str, str], ...]
    """Headers added to an actual response other than Allow-Origin."""
    credentials: bool
    forward_unmatched: bool = True

    @classmethod
    def of(cls, policy: CorsPolicy | None) -> CompiledCors | None:
        if policy is None:
            return None
        credentials = bool(policy.allow_credentials)
        preflight: list[tuple[str, str]] = []
        if policy.allow_methods:
            preflight.append((ALLOW_METHODS, ",".join(policy.allow_methods)))
        if policy.allow_headers:
            preflight.append((ALLOW_HEADERS, ",".join(policy.allow_headers)))
        if policy.max_age is not None:
            preflight.append((MAX_AGE, str(int(policy.max_age))))
        response: list[tuple[str, str]] = []
        if policy.expose_headers:
            response.append((EXPOSE_HEADERS, ",".join(policy.expose_headers)))
        if credentials:
            preflight.append((ALLOW_CREDENTIALS, "true"))
            response.append((ALLOW_CREDENTIALS, "true"))
        return cls(
            origins=tuple(policy.allow_origins),
            any_origin=any(match.exact == "*" for match in policy.allow_origins),
            preflight_headers=tuple(preflight),
            response_headers=tuple(response),
            credentials=credentials,
            forward_unmatched=policy.unmatched_preflights != UnmatchedPreflights.IGNORE,
        )

    def allowed(self, origin: str | None) -> bool:
        if not origin:
            return False
        return self.any_origin or any(match.matches(origin) for match in self.origins)

    def _allow_origin(self, origin: str) -> str:
        return "*" if self.any_origin and not self.credentials else origin

    def preflight(self, method: str, headers: Mapping[str, str]) -> list[tuple[str, str]] | None:
        """The headers of the proxy's own answer to a preflight (none for an unmatched one under IGNORE);
        None: not a preflight, or an unmatched one to forward."""
        origin = headers.get(ORIGIN)
        if method != "OPTIONS" or not origin or not headers.get(REQUEST_METHOD):
            return None
        if not self.allowed(origin):
            return None if self.forward_unmatched else []
        return [(ALLOW_ORIGIN, self._allow_origin(origin)), *self.preflight_headers]

    def actual(self, origin: str | None) -> list[tuple[str, str]]:
        """Headers to add to the upstream's response to a request from `origin`."""
        if origin is None or not self.allowed(origin):
            return []
        return [(ALLOW_ORIGIN, self._allow_origin(origin)), *self.response_headers]
