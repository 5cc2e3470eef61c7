"""VirtualService: ordered HTTP routes with matches, weighted destinations, timeouts, retries and faults."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from shared.model.base import Duration, Percent, Spec
from shared.model.string_match import StringMatch


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
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    without_headers: dict[str, StringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool = False
    source_labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers", "without_headers")
    @classmethod
    def _lower_header_names(cls, value: dict[str, StringMatch]) -> dict[str, StringMatch]:
        return {name.lower(): match for name, match in value.items()}


class HTTPRetry(Spec):
    attempts: Annotated[int, Field(ge=0)] = 2
    per_try_timeout: Duration | None = None
    retry_on: str | None = None


class Delay(Spec):
    fixed_delay: Duration
    percentage: Percent | None = None


class Abort(Spec):
    http_status: Annotated[int, Field(ge=200, le=599)]
    percentage: Percent | None = None


class HTTPFaultInjection(Spec):
    delay: Delay | None = None
    abort: Abort | None = None


class HTTPRewrite(Spec):
    uri: str | None = None
    authority: str | None = None


class HTTPRoute(Spec):
    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    headers: Headers | None = None

    @model_validator(mode="after")
    def _has_destination(self) -> HTTPRoute:
        if not self.route:
            raise ValueError("route: at least one destination is required")
        return self


class VirtualServiceSpec(Spec):
    hosts: Annotated[list[str], Field(min_length=1)]
    gateways: list[str] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)

    @field_validator("hosts")
    @classmethod
    def _hosts_not_empty(cls, value: list[str]) -> list[str]:
        for host in value:
            if not host or host != host.strip():
                raise ValueError(f"host {host!r} must be a non-empty name without spaces")
        return value
