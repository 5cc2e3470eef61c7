"""VirtualService: ordered HTTP and TCP routes with matches, weighted destinations, timeouts, retries and faults.

Also redirects, direct responses, CORS policies and mirroring. TCP routes (`tcp`, Istio's TCPRoute) apply to
services declared as TCP in the catalog (Consul Meta `isthmus-protocol: tcp`) and match on connection
attributes only: the service port and the caller's labels. Choices where Istio leaves room: an empty
StringMatch (`{}`) is allowed in `headers`, `withoutHeaders` and `queryParams` only and means "present"
(so under `withoutHeaders`, "absent"); a route has exactly one of `route`, `redirect` or `directResponse`.

Delegation (Istio's `HTTPRoute.delegate`, one level only): a route of a root VirtualService may name, instead of
`route`/`redirect`/`directResponse`, a delegate VirtualService `{name, namespace}` (namespace defaulting to the
root's) whose http routes take its place (merged by pilot, services/pilot/generate/delegate.py). A
VirtualService without `hosts` is a delegate: http routes only, no `gateways`, no `tcp`, and none of its routes
may delegate again. Every other VirtualService needs at least one host.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.model.base import Duration, Percent, Spec, refused
from shared.model.export_to import ExportTo
from shared.model.string_match import StringMatch


class PresentOrStringMatch(StringMatch):
    """A StringMatch that may also be empty (`{}`): then any value matches, as long as the header is there."""

    @model_validator(mode="after")
    def _exactly_one(self) -> PresentOrStringMatch:
        given = [name for name in ("exact", "prefix", "regex") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(
                f"set exactly one of exact, prefix or regex, or none ({{}}: any present value) (got {given})"
            )
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as err:
                raise ValueError(f"regex {self.regex!r} does not compile: {err}") from err
        return self

    @property
    def presence_only(self) -> bool:
        return self.exact is None and self.prefix is None and self.regex is None

    def matches(self, value: str | None) -> bool:
        if self.presence_only:
            return value is not None
        return super().matches(value)


class PortSelector(Spec):
    number: Annotated[int, Field(ge=1, le=65535)]


class Destination(Spec):
    host: Annotated[str, Field(min_length=1)]
    subset: str | None = None
    port: PortSelector | None = None


class HeaderOperations(Spec):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class Headers(Spec):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPRouteDestination(Spec):
    destination: Destination
    weight: Annotated[int, Field(ge=0)] | None = None
    headers: Headers | None = None


class HTTPMatchRequest(Spec):
    """Conditions inside one match are ANDed; an HTTPRoute's match blocks are ORed."""

    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, PresentOrStringMatch] = Field(default_factory=dict)
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    query_params: dict[str, PresentOrStringMatch] = Field(default_factory=dict)
    without_headers: dict[str, PresentOrStringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool = False
    source_labels: dict[str, str] = Field(default_factory=dict)
    source_namespace: Annotated[str, Field(min_length=1)] | None = None
    gateways: list[str] = Field(default_factory=list)
    """Istio's match-level `gateways`: when set, the block applies only to these (`mesh`: the sidecars) instead of
    the VirtualService's `gateways`."""

    @field_validator("headers", "without_headers")
    @classmethod
    def _lower_header_names(cls, value: dict[str, PresentOrStringMatch]) -> dict[str, PresentOrStringMatch]:
        return {name.lower(): match for name, match in value.items()}


class HTTPRetry(Spec):
    attempts: Annotated[int, Field(ge=0)] = 2
    per_try_timeout: Duration | None = None
    retry_on: str | None = None
    backoff: Duration | None = None
    """The base interval of the exponential backoff between tries (Envoy's default 25 ms; the cap is 10 times
    it)."""
    retry_ignore_previous_hosts: bool | None = None
    """Retries pick an endpoint not tried yet when there is one (unset: true, as in Istio)."""
    retry_remote_localities: bool | None = None
    """Retries leave out the locality groups (priorities) already tried while another has endpoints (Envoy's
    previous_priorities); unset: false."""

    @field_validator("backoff")
    @classmethod
    def _backoff(cls, value: float | None) -> float | None:
        if value is not None and value < 0.001:
            raise ValueError("backoff must be at least 1ms")
        return value


class Delay(Spec):
    fixed_delay: Duration
    percentage: Percent | None = None


class Abort(Spec):
    http_status: Annotated[int, Field(ge=200, le=599)]
    percentage: Percent | None = None


class HTTPFaultInjection(Spec):
    delay: Delay | None = None
    abort: Abort | None = None


class RegexRewrite(Spec):
    """Every match of `match` in the path is replaced by `rewrite` (`\\1` refers to a group)."""

    match: str
    rewrite: str

    @model_validator(mode="after")
    def _compiles(self) -> RegexRewrite:
        try:
            re.compile(self.match)
        except re.error as err:
            raise ValueError(f"match: regex {self.match!r} does not compile: {err}") from err
        return self


class HTTPRewrite(Spec):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None

    @model_validator(mode="after")
    def _one_path_rewrite(self) -> HTTPRewrite:
        if self.uri is not None and self.uri_regex_rewrite is not None:
            raise ValueError("set either uri or uriRegexRewrite, not both")
        return self


class RedirectPortSelection(StrEnum):
    FROM_PROTOCOL_DEFAULT = "FROM_PROTOCOL_DEFAULT"
    FROM_REQUEST_PORT = "FROM_REQUEST_PORT"


REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


class HTTPRedirect(Spec):
    """Answered by the proxy: `uri` replaces the whole path (the query is kept), `authority` the host."""

    uri: str | None = None
    authority: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    derive_port: RedirectPortSelection | None = None
    scheme: str | None = None
    redirect_code: int = 301

    @model_validator(mode="after")
    def _valid(self) -> HTTPRedirect:
        if self.redirect_code not in REDIRECT_CODES:
            raise ValueError(f"redirectCode: {self.redirect_code} is not one of {sorted(REDIRECT_CODES)}")
        if self.port is not None and self.derive_port is not None:
            raise ValueError("set either port or derivePort, not both")
        if self.uri is not None and not self.uri.startswith("/"):
            raise ValueError(f"uri: {self.uri!r} must start with '/'")
        if self.scheme is not None and self.scheme not in ("http", "https"):
            raise ValueError(f"scheme: {self.scheme!r} must be http or https")
        return self


class HTTPBody(Spec):
    string: str | None = None
    bytes_: Annotated[str | None, Field(alias="bytes")] = None
    """Base64, as in Istio's YAML."""

    @model_validator(mode="after")
    def _one(self) -> HTTPBody:
        if (self.string is None) == (self.bytes_ is None):
            raise ValueError("exactly one of string or bytes must be set")
        if self.bytes_ is not None:
            try:
                base64.b64decode(self.bytes_, validate=True)
            except binascii.Error as err:
                raise ValueError(f"bytes: not valid base64: {err}") from err
        return self

    def content(self) -> bytes:
        if self.string is not None:
            return self.string.encode()
        return base64.b64decode(self.bytes_ or "")


class HTTPDirectResponse(Spec):
    status: Annotated[int, Field(ge=200, le=599)]
    body: HTTPBody | None = None


class UnmatchedPreflights(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    FORWARD = "FORWARD"
    IGNORE = "IGNORE"


class CorsPolicy(Spec):
    """Preflights from an allowed origin are answered by the proxy; other requests get the CORS headers added."""

    allow_origins: list[StringMatch] = Field(default_factory=list)
    allow_methods: list[str] = Field(default_factory=list)
    allow_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    max_age: Duration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: UnmatchedPreflights | None = None
    """A preflight from an origin not allowed: FORWARD (unset, UNSPECIFIED) goes upstream like any request;
    IGNORE is answered 200 by the proxy without CORS headers, so the browser refuses the actual request."""


class HTTPMirrorPolicy(Spec):
    destination: Destination
    percentage: Percent | None = None


FieldError = tuple[tuple[str | int, ...], str | None, Any]
"""(loc below the validated model, message or None for a missing field, input)."""


def _field_errors(title: str, errors: list[FieldError]) -> ValidationError:
    """Errors at fields below the validated model, so galley's messages name the exact field path
    (`spec.http[0].delegate: ...`) rather than the model holding it."""
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type="missing" if message is None else PydanticCustomError("value_error", message), loc=loc, input=value
            )
            for loc, message, value in errors
        ],
    )


class Delegate(Spec):
    """Istio's Delegate: the VirtualService (one without hosts) whose http routes replace the delegating route."""

    name: Annotated[str, Field(min_length=1)]
    namespace: str | None = None
    """Default: the namespace of the VirtualService holding the delegating route."""


class HTTPRoute(Spec):
    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percentage: Percent | None = None
    mirrors: list[HTTPMirrorPolicy] = Field(default_factory=list)
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None
    delegate: Delegate | None = None

    @model_validator(mode="after")
    def _has_destination(self) -> HTTPRoute:
        if self.delegate is not None:
            set_here = [
                name
                for name, value in (
                    ("route", self.route),
                    ("redirect", self.redirect),
                    ("directResponse", self.direct_response),
                )
                if value
            ]
            if set_here:
                message = (
                    f"a delegating route must not set {' or '.join(set_here)}: the delegate's routes say where "
                    "requests go (match, timeout, retries, headers and the like may stay, the delegate inherits them)"
                )
                raise _field_errors("HTTPRoute", [(("delegate",), message, self.delegate.model_dump(by_alias=True))])
        given = [
            name
            for name, value in (
                ("route", self.route),
                ("redirect", self.redirect),
                ("directResponse", self.direct_response),
            )
            if value
        ]
        if not given and self.delegate is None:
            raise ValueError("route: at least one destination is required")
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} are mutually exclusive: set only one")
        if self.rewrite is not None and self.redirect is not None:
            raise ValueError("rewrite and redirect are mutually exclusive")
        if self.mirror is not None and self.mirrors:
            raise ValueError("set either mirror (with mirrorPercentage) or mirrors, not both")
        if self.mirror_percentage is not None and self.mirror is None:
            raise ValueError("mirrorPercentage: needs mirror")
        return self

    def mirror_policies(self) -> list[HTTPMirrorPolicy]:
        """`mirror` + `mirrorPercentage` and `mirrors` as one list (no percentage: every request)."""
        if self.mirror is not None:
            return [HTTPMirrorPolicy(destination=self.mirror, percentage=self.mirror_percentage)]
        return list(self.mirrors)


class L4MatchAttributes(Spec):
    """One match block of a TCP route: conditions ANDed; a route's blocks are ORed."""

    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """The service port the caller connected to (the port of its declared upstream; a gateway server's port)."""
    source_labels: dict[str, str] = Field(default_factory=dict)
    source_namespace: Annotated[str, Field(min_length=1)] | None = None
    gateways: list[str] = Field(default_factory=list)
    """As on an http match block: when set, the block applies only to these gateways (`mesh`: the sidecars)."""
    destination_subnets: Annotated[
        Any,
        refused(
            "destinationSubnets is not supported: Isthmus does not capture traffic, so a connection has no "
            "original destination address; a sidecar's TCP listener stands for one declared upstream "
            "(name:port): match on `port`, or route each upstream by its own VirtualService"
        ),
    ] = None


class TLSMatchAttributes(Spec):
    """One match block of a TLS route (Istio's TLSMatchAttributes): the client's SNI is one of `sniHosts`
    (`*.example.com` covers one or more labels), on `port` when given."""

    sni_hosts: Annotated[list[str], Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    gateways: list[str] = Field(default_factory=list)
    destination_subnets: Any = None
    source_labels: Any = None
    source_namespace: Any = None

    @field_validator("sni_hosts")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for host in value:
            if not host or host != host.strip() or ("*" in host and host != "*" and not host.startswith("*.")):
                raise ValueError(f"sniHost {host!r} must be a name, '*' or a leading '*.' wildcard")
        return [host.lower() for host in value]

    @field_validator("destination_subnets", "source_labels", "source_namespace")
    @classmethod
    def _refused(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("not supported: TLS routes match by SNI, port and gateways")
        return value


def names_source(block: HTTPMatchRequest | L4MatchAttributes) -> bool:
    """Whether a match block looks at the caller (`sourceLabels`, `sourceNamespace`)."""
    return bool(block.source_labels) or block.source_namespace is not None


def source_meets(block: HTTPMatchRequest | L4MatchAttributes, labels: Mapping[str, str], namespace: str) -> bool:
    """Whether a caller with these labels, in this namespace, meets the block's source conditions (Istio:
    the caller's sidecar carries every `sourceLabels` pair and runs in `sourceNamespace`)."""
    if block.source_namespace is not None and block.source_namespace != namespace:
        return False
    return all(labels.get(key) == value for key, value in block.source_labels.items())


class RouteDestination(Spec):
    destination: Destination
    weight: Annotated[int, Field(ge=0)] | None = None


class TCPRoute(Spec):
    """Istio's TCPRoute: the first route whose match applies takes the connection; weights pick per connection."""

    match: list[L4MatchAttributes] = Field(default_factory=list)
    route: Annotated[list[RouteDestination], Field(min_length=1)]


class TLSRoute(Spec):
    """Istio's TLSRoute: on a gateway's TLS PASSTHROUGH server, and on a sidecar's TCP listener for the
    VirtualService's host, the first route whose match applies to the client's SNI takes the connection; weights
    pick per connection."""

    match: Annotated[list[TLSMatchAttributes], Field(min_length=1)]
    route: Annotated[list[RouteDestination], Field(min_length=1)]


class VirtualServiceSpec(Spec):
    hosts: list[str] = Field(default_factory=list)
    """Empty only for a delegate VirtualService."""
    gateways: list[str] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    tcp: list[TCPRoute] = Field(default_factory=list)
    tls: list[TLSRoute] = Field(default_factory=list)
    export_to: ExportTo = Field(default_factory=list)

    @field_validator("hosts")
    @classmethod
    def _hosts_not_empty(cls, value: list[str]) -> list[str]:
        for host in value:
            if not host or host != host.strip():
                raise ValueError(f"host {host!r} must be a non-empty name without spaces")
        return value

    @property
    def is_delegate(self) -> bool:
        """A VirtualService without hosts: reached only through a root's `delegate`, never by a host."""
        return not self.hosts

    @model_validator(mode="after")
    def _delegate_shape(self) -> VirtualServiceSpec:
        """Istio's ValidateVirtualService: a VirtualService without hosts is a delegate, which holds http routes
        only and cannot delegate again (one level of delegation)."""
        if not self.is_delegate:
            return self
        errors: list[FieldError] = []
        if not self.http:
            errors.append((("hosts",), None, self.hosts))  # neither a routing VirtualService nor a delegate
        if self.gateways:
            errors.append((("gateways",), "a delegate VirtualService (no hosts) must not name gateways", self.gateways))
        if self.tcp:
            errors.append(
                (("tcp",), "a delegate VirtualService (no hosts) holds http routes only, tcp routes need hosts", [])
            )
        if self.tls:
            errors.append(
                (("tls",), "a delegate VirtualService (no hosts) holds http routes only, tls routes need hosts", [])
            )
        for i, route in enumerate(self.http):
            if route.delegate is not None:
                errors.append(
                    (
                        ("http", i, "delegate"),
                        "a delegate VirtualService (no hosts) cannot delegate again: only one level of delegation",
                        route.delegate.model_dump(by_alias=True),
                    )
                )
        if errors:
            raise _field_errors("VirtualServiceSpec", errors)
        return self
