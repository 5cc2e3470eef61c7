"""First filter of the outbound path: pure route selection (virtual host, first matching route, weighted cluster)."""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from services.proxy.cors import CompiledCors
from services.proxy.errors import NoRoute
from services.proxy.retry import RetryPolicy, policy_for
from shared.model.proxy_config import Cluster, MirrorCluster, ProxyConfig, Route, VirtualHost, WeightedCluster
from shared.model.string_match import StringMatch
from shared.model.virtual_service import (
    HeaderOperations,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRedirect,
)

DEFAULT_PORT = 80
"""The port of a request whose Host names none, for `port` matches."""


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """What the request path reads of a route, copied out of its config model once per config version (a
    config model's attribute costs several times a plain slot's to read), its retries parsed."""

    name: str | None
    timeout: float | None
    """None: no route timeout (Istio's 0s disables it too)."""
    retry: RetryPolicy
    fault: HTTPFaultInjection | None
    request_ops: HeaderOperations | None
    response_ops: HeaderOperations | None
    redirect: HTTPRedirect | None
    direct_response: HTTPDirectResponse | None
    mirrors: tuple[MirrorCluster, ...]

    @classmethod
    def of(cls, route: Route) -> RoutePlan:
        headers = route.headers
        return cls(
            route.name,
            route.timeout or None,
            policy_for(route.retries),
            route.fault,
            headers.request if headers is not None else None,
            headers.response if headers is not None else None,
            route.redirect,
            route.direct_response,
            tuple(route.mirrors),
        )


@dataclass(slots=True)
class Decision:
    """Where one request goes: the chosen route and weighted cluster, and the path/authority to send."""

    virtual_host: str
    route: Route
    plan: RoutePlan
    destination: WeightedCluster | None
    """None when the route answers itself (redirect, directResponse)."""
    path: str
    """Path plus query after any rewrite."""
    authority: str
    """Host header to send upstream after any rewrite."""
    cors: CompiledCors | None = None
    port: int | None = None
    """The port the request was addressed to, when it named one."""

    @property
    def cluster(self) -> str:
        """The chosen cluster's name ("" when the route answers itself)."""
        return self.destination.cluster if self.destination is not None else ""


@dataclass(slots=True)
class RequestView:
    """The parts of a request routing looks at, normalised once."""

    method: str
    host: str
    authority: str
    path: str
    query: str
    headers: Mapping[str, str]
    port: int | None

    @classmethod
    def of(cls, method: str, host: str, path: str, headers: Mapping[str, str], port: int | None) -> RequestView:
        authority = host.strip().lower()
        bare = strip_port(authority)
        uri_path, _, query = path.partition("?")
        lowered = {name.lower(): value for name, value in headers.items()} if headers else _NO_HEADERS
        return cls(method.upper(), bare, authority, uri_path or "/", query, lowered, port)


def strip_port(host: str) -> str:
    """`example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`; a host without port is returned as is."""
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name
    return host


def _lowered(match: StringMatch) -> StringMatch:
    if match.exact is not None:
        return StringMatch(exact=match.exact.lower())
    if match.prefix is not None:
        return StringMatch(prefix=match.prefix.lower())
    return StringMatch(regex=f"(?i:{match.regex})")


@dataclass(frozen=True, slots=True)
class _CompiledMatch:
    source: HTTPMatchRequest
    uri: StringMatch | None
    ignore_case: bool

    @classmethod
    def of(cls, match: HTTPMatchRequest) -> _CompiledMatch:
        uri = match.uri
        if uri is not None and match.ignore_uri_case:
            uri = _lowered(uri)
        return cls(match, uri, match.ignore_uri_case)

    def matches(self, request: RequestView, query: Mapping[str, str]) -> bool:
        match = self.source
        if self.uri is not None:
            path = request.path.lower() if self.ignore_case else request.path
            if not self.uri.matches(path):
                return False
        if match.method is not None and not match.method.matches(request.method):
            return False
        if match.authority is not None and not match.authority.matches(request.authority):
            return False
        if match.scheme is not None and not match.scheme.matches("http"):
            return False
        if match.port is not None and match.port != (request.port or DEFAULT_PORT):
            return False
        for name, header_match in match.headers.items():
            if not header_match.matches(request.headers.get(name)):
                return False
        for name, param_match in match.query_params.items():
            if not param_match.matches(query.get(name)):
                return False
        for name, header_match in match.without_headers.items():
            if header_match.matches(request.headers.get(name)):
                return False
        return True


@dataclass(frozen=True, slots=True)
class _CompiledRoute:
    route: Route
    plan: RoutePlan
    destinations: tuple[WeightedCluster, ...]
    answers_itself: bool
    """No destination: the route answers with its redirect or direct response."""
    matches: tuple[_CompiledMatch, ...]
    cumulative: tuple[int, ...]
    """Running totals of the destinations' weights, for a bisect pick."""
    cors: CompiledCors | None
    regex_rewrite: tuple[re.Pattern[str], str] | None
    """rewrite.uriRegexRewrite compiled once; `\\1` group references mean the same to re.sub as to Envoy."""

    @classmethod
    def of(cls, route: Route) -> _CompiledRoute:
        totals: list[int] = []
        running = 0
        for destination in route.route:
            running += destination.weight
            totals.append(running)
        matches = tuple(_CompiledMatch.of(m) for m in route.match)
        regex = route.rewrite.uri_regex_rewrite if route.rewrite is not None else None
        compiled_regex = (re.compile(regex.match), regex.rewrite) if regex is not None else None
        answers_itself = not route.route and (route.redirect is not None or route.direct_response is not None)
        return cls(
            route,
            RoutePlan.of(route),
            tuple(route.route),
            answers_itself,
            matches,
            tuple(totals),
            CompiledCors.of(route.cors_policy),
            compiled_regex,
        )

    def first_match(self, request: RequestView, query: Mapping[str, str]) -> tuple[bool, HTTPMatchRequest | None]:
        """Whether the route matches, and which match block did (None for a route without blocks)."""
        if not self.matches:
            return True, None
        for compiled in self.matches:
            if compiled.matches(request, query):
                return True, compiled.source
        return False, None

    def pick(self, rng: random.Random) -> WeightedCluster | None:
        if self.answers_itself:
            return None
        total = self.cumulative[-1] if self.cumulative else 0
        if len(self.cumulative) == 1 and total > 0:
            return self.destinations[0]  # one destination: nothing to draw
        if total <= 0:
            raise NoRoute(f"route {self.route.name or '(unnamed)'} has no destination with a weight above 0")
        index = bisect.bisect_right(self.cumulative, rng.randrange(total))
        return self.destinations[index]


@dataclass(frozen=True, slots=True)
class _CompiledHost:
    name: str
    routes: tuple[_CompiledRoute, ...]
    catch_all: _CompiledRoute | None = None
    """The first route when it matches every request and rewrites nothing: it is chosen without looking at the
    request (the common one-route virtual host)."""


def _rewrite(
    route: Route,
    match: HTTPMatchRequest | None,
    request: RequestView,
    regex: tuple[re.Pattern[str], str] | None,
) -> tuple[str, str]:
    path = request.path
    authority = request.authority
    rewrite = route.rewrite
    if rewrite is not None:
        if regex is not None:
            pattern, replacement = regex
            path = pattern.sub(replacement, path)
        elif rewrite.uri is not None:
            if match is not None and match.uri is not None and match.uri.prefix is not None:
                path = rewrite.uri + path[len(match.uri.prefix) :]
            else:
                path = rewrite.uri
        if rewrite.authority is not None:
            authority = rewrite.authority
    full_path = f"{path}?{request.query}" if request.query else path
    return full_path, authority


_NO_HEADERS: Mapping[str, str] = {}


class RouteTable:
    """Everything one config version needs to route, precomputed; built once, then only read."""

    def __init__(
        self,
        hosts: dict[str, _CompiledHost],
        wildcards: list[tuple[str, _CompiledHost]],
        clusters: dict[str, Cluster],
        rng: random.Random,
    ) -> None:
        self._hosts = hosts
        self._wildcards = wildcards
        self.clusters = clusters
        self._rng = rng
        every_host = [*hosts.values(), *(compiled for _, compiled in wildcards)]
        self._reads_headers = any(
            match.source.headers or match.source.without_headers
            for host in every_host
            for route in host.routes
            for match in route.matches
        )
        """Whether any match looks at headers; if none does, requests skip building the lowered header view."""

    @classmethod
    def build(cls, config: ProxyConfig, rng: random.Random) -> RouteTable:
        """Index the config; raises ValueError naming the problem when a route points at no cluster."""
        return cls.of(config.virtual_hosts, {cluster.name: cluster for cluster in config.clusters}, rng)

    @classmethod
    def of(cls, virtual_hosts: list[VirtualHost], clusters: dict[str, Cluster], rng: random.Random) -> RouteTable:
        """Index virtual hosts whose routes name `clusters` (a sidecar's outbound ones, or a gateway server's)."""
        hosts: dict[str, _CompiledHost] = {}
        wildcards: list[tuple[str, _CompiledHost]] = []
        for vhost in virtual_hosts:
            compiled = _compile_host(vhost, clusters)
            for domain in vhost.domains:
                domain = domain.lower()
                if domain.startswith("*"):
                    wildcards.append((domain[1:], compiled))
                else:
                    hosts.setdefault(domain, compiled)
        # Longest suffix first, like Envoy; a bare "*" (empty suffix) comes last.
        wildcards.sort(key=lambda item: len(item[0]), reverse=True)
        return cls(hosts, wildcards, clusters, rng)

    def virtual_host(self, authority: str) -> _CompiledHost | None:
        bare = strip_port(authority)
        found = self._hosts.get(bare) or self._hosts.get(authority)
        if found is not None:
            return found
        for suffix, compiled in self._wildcards:
            if bare.endswith(suffix):
                return compiled
        return None

    def decide(
        self,
        method: str,
        host: str,
        path: str,
        headers: Mapping[str, str],
        port: int | None = None,
    ) -> Decision:
        """Route one request; raises NoRoute when no virtual host or no route matches."""
        authority = host.strip().lower()
        vhost = self.virtual_host(authority)
        if vhost is not None and vhost.catch_all is not None:
            chosen = vhost.catch_all
            uri_path, _, raw_query = path.partition("?")
            uri_path = uri_path or "/"
            full_path = f"{uri_path}?{raw_query}" if raw_query else uri_path
            destination = chosen.pick(self._rng)
            return Decision(vhost.name, chosen.route, chosen.plan, destination, full_path, authority, chosen.cors, port)
        request = RequestView.of(method, host, path, headers if self._reads_headers else _NO_HEADERS, port)
        if vhost is None:
            raise NoRoute(f"no virtual host for {request.host!r}")
        query = dict(parse_qsl(request.query, keep_blank_values=True)) if request.query else {}
        for compiled in vhost.routes:
            matched, block = compiled.first_match(request, query)
            if not matched:
                continue
            destination = compiled.pick(self._rng)
            full_path, authority = _rewrite(compiled.route, block, request, compiled.regex_rewrite)
            plan, cors = compiled.plan, compiled.cors
            return Decision(vhost.name, compiled.route, plan, destination, full_path, authority, cors, request.port)
        raise NoRoute(f"no route of virtual host {vhost.name!r} matches {request.method} {request.path}")


def _compile_host(vhost: VirtualHost, clusters: dict[str, Cluster]) -> _CompiledHost:
    for index, route in enumerate(vhost.routes):
        if not route.route and route.redirect is None and route.direct_response is None:
            raise ValueError(f"virtualHosts[{vhost.name}].routes[{index}]: no destination, redirect or directResponse")
        for name in [*(d.cluster for d in route.route), *(m.cluster for m in route.mirrors)]:
            if name not in clusters:
                raise ValueError(f"virtualHosts[{vhost.name}].routes[{index}]: cluster {name!r} is not defined")
    routes = tuple(_CompiledRoute.of(route) for route in vhost.routes)
    first = routes[0] if routes else None
    catch_all = first if first is not None and not first.matches and first.route.rewrite is None else None
    return _CompiledHost(vhost.name, routes, catch_all)
