"""Inbound filter after peer and request authentication: AuthorizationPolicy (CUSTOM, DENY, ALLOW, AUDIT).

Each config version compiles its policies once into predicates; a request only runs them. Semantics (Istio's):
- order: CUSTOM (a match asks the policy's ext-authz provider, see ext_authz.py) -> DENY -> ALLOW; AUDIT only logs;
- no ALLOW policy allows; ALLOW policies present but none matching denies (so an ALLOW policy without rules, or
  `spec: {}`, denies everything); a policy without rules never matches, a rule `{}` matches every request;
- inside a rule `from`, `to` and `when` are ANDed, the items of `from` / `to` ORed, the fields of one source /
  operation ANDed, the values of one field ORed; `notX` excludes; a field that is absent does not constrain;
- values: exact, `prefix*`, `*suffix`, `*` (`*` needs the value to be present: `principals: ["*"]` means "any
  authenticated peer"); hosts compare case-insensitively, and a host without port also matches `host:<port>`;
  paths are matched without the query string; plain-text peers have no principal and no namespace;
- remoteIpBlocks / remote.ip use the direct peer address (Isthmus trusts no X-Forwarded-For hop);
- fail closed: a rule that cannot be compiled or raises while evaluated counts as matching in DENY and CUSTOM
  policies and as not matching in ALLOW policies.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.identity.spiffe import InvalidSpiffeId, parse_spiffe_id
from shared.model.authorization_policy import (
    HEADER_KEY,
    IP_CONDITION_KEYS,
    Action,
    Condition,
    Operation,
    Rule,
    Source,
    claim_path,
)
from shared.model.proxy_config import NamedAuthorizationPolicy

log = logging.getLogger(__name__)

DENIED_BODY = "RBAC: access denied"

Values = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What authorization looks at for one inbound request."""

    peer_spiffe_id: str | None
    source_ip: str
    method: str
    path: str
    host: str
    port: int
    headers: Mapping[str, str]
    request_principal: str | None = None
    """`iss/sub` of the verified JWT, None without one."""
    claims: Mapping[str, Any] | None = None
    """The verified JWT's payload."""
    sni: str = ""
    destination_ip: str = ""

    principal: str | None = field(init=False, default=None)
    """`<trust-domain>/ns/<ns>/sa/<sa>` of the mTLS peer; None for plain text (computed once per request)."""
    namespace: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.peer_spiffe_id is None:
            return
        try:
            parsed = parse_spiffe_id(self.peer_spiffe_id)
        except InvalidSpiffeId:
            return
        object.__setattr__(self, "principal", parsed.principal)
        object.__setattr__(self, "namespace", parsed.namespace)


Predicate = Callable[[RequestFacts], bool]
Getter = Callable[[RequestFacts], Values]


def value_matches(pattern: str, value: str | None) -> bool:
    """Istio's string form: exact, `prefix*`, `*suffix` or `*`."""
    return value is not None and string_matcher(pattern)(value)


def string_matcher(pattern: str, ignore_case: bool = False) -> Callable[[str], bool]:
    if ignore_case:
        pattern = pattern.lower()
        inner = string_matcher(pattern)
        return lambda value: inner(value.lower())
    if pattern == "*":
        return lambda _value: True
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        return lambda value: value.startswith(prefix)
    if pattern.startswith("*"):
        suffix = pattern[1:]
        return lambda value: value.endswith(suffix)
    return lambda value: value == pattern


def _any_pattern(patterns: Sequence[str], ignore_case: bool = False) -> Callable[[Values], bool]:
    matchers = [string_matcher(p, ignore_case) for p in patterns]
    return lambda values: any(m(v) for v in values for m in matchers)


def _any_block(blocks: Sequence[str]) -> Callable[[Values], bool]:
    networks = [ipaddress.ip_network(block, strict=False) for block in blocks]

    def matches(values: Values) -> bool:
        for value in values:
            address = ipaddress.ip_address(value)
            if any(address in network for network in networks):
                return True
        return False

    return matches


def _field(
    values: Sequence[str], not_values: Sequence[str], get: Getter, ip: bool = False, ignore_case: bool = False
) -> list[Predicate]:
    """Values ORed inside one field; notValues exclude; an empty list does not constrain."""
    compile_one = _any_block if ip else (lambda patterns: _any_pattern(patterns, ignore_case))
    checks: list[Predicate] = []
    if values:
        positive = compile_one(values)
        checks.append(lambda f: positive(get(f)))
    if not_values:
        negative = compile_one(not_values)
        checks.append(lambda f: not negative(get(f)))
    return checks


def _one(value: str | None) -> Values:
    return () if value is None or value == "" else (value,)


def _host_values(facts: RequestFacts) -> Values:
    host = facts.host.lower()
    bare, sep, port = host.rpartition(":")
    if sep and port.isdigit() and (":" not in bare or bare.endswith("]")):
        return (host, bare)
    return (host,)


def _claim_values(value: Any) -> Values:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(str(item) for item in value if not isinstance(item, dict | list))
    if isinstance(value, bool):
        return ("true" if value else "false",)
    if isinstance(value, dict):
        return ()
    return (str(value),)


def _claim_getter(path: tuple[str, ...]) -> Getter:
    def get(facts: RequestFacts) -> Values:
        node: Any = facts.claims
        for part in path:
            if not isinstance(node, Mapping):
                return ()
            node = node.get(part)
        return _claim_values(node)

    return get


def _condition_getter(key: str) -> Getter:
    simple: dict[str, Getter] = {
        "source.principal": lambda f: _one(f.principal),
        "source.namespace": lambda f: _one(f.namespace),
        "source.ip": lambda f: _one(f.source_ip),
        "remote.ip": lambda f: _one(f.source_ip),
        "destination.ip": lambda f: _one(f.destination_ip),
        "destination.port": lambda f: (str(f.port),),
        "connection.sni": lambda f: _one(f.sni),
        "request.auth.principal": lambda f: _one(f.request_principal),
        "request.auth.audiences": _claim_getter(("aud",)),
        "request.auth.presenter": _claim_getter(("azp",)),
    }
    if key in simple:
        return simple[key]
    header = HEADER_KEY.match(key)
    if header is not None:
        name = header.group(1).lower()
        return lambda f: _one(f.headers.get(name))
    path = claim_path(key)
    if path is not None:
        return _claim_getter(path)
    raise ValueError(f"condition key {key!r} is not supported")


def _source(source: Source) -> list[Predicate]:
    return [
        *_field(source.principals, source.not_principals, lambda f: _one(f.principal)),
        *_field(source.request_principals, source.not_request_principals, lambda f: _one(f.request_principal)),
        *_field(source.namespaces, source.not_namespaces, lambda f: _one(f.namespace)),
        *_field(source.ip_blocks, source.not_ip_blocks, lambda f: _one(f.source_ip), ip=True),
        *_field(source.remote_ip_blocks, source.not_remote_ip_blocks, lambda f: _one(f.source_ip), ip=True),
    ]


def _operation(operation: Operation) -> list[Predicate]:
    return [
        *_field(operation.hosts, operation.not_hosts, _host_values, ignore_case=True),
        *_field(operation.ports, operation.not_ports, lambda f: (str(f.port),)),
        *_field(operation.methods, operation.not_methods, lambda f: (f.method,)),
        *_field(operation.paths, operation.not_paths, lambda f: (f.path.partition("?")[0],)),
    ]


def _condition(condition: Condition) -> list[Predicate]:
    ip = condition.key in IP_CONDITION_KEYS
    return _field(condition.values, condition.not_values, _condition_getter(condition.key), ip=ip)


def _all(checks: list[Predicate]) -> Predicate:
    return lambda facts: all(check(facts) for check in checks)


def compile_rule(rule: Rule) -> Predicate:
    """Raises ValueError (or ipaddress errors) when the rule cannot be evaluated."""
    parts: list[Predicate] = []
    if rule.from_:
        sources = [_all(_source(item.source)) for item in rule.from_]
        parts.append(lambda f: any(s(f) for s in sources))
    if rule.to:
        operations = [_all(_operation(item.operation)) for item in rule.to]
        parts.append(lambda f: any(o(f) for o in operations))
    for condition in rule.when:
        parts.extend(_condition(condition))
    return _all(parts)


@dataclass(frozen=True)
class CompiledPolicy:
    label: str
    action: Action
    provider: str | None
    rules: tuple[Predicate, ...]
    on_error: bool
    """What a broken rule counts as: True (match) for DENY and CUSTOM, False for ALLOW and AUDIT."""

    def matches(self, facts: RequestFacts) -> bool:
        for rule in self.rules:
            try:
                if rule(facts):
                    return True
            except Exception as err:  # any surprise counts as the closed answer
                log.warning("policy %s: rule evaluation failed (%s); counted as %s", self.label, err, self.on_error)
                if self.on_error:
                    return True
        return False


def _constant(answer: bool) -> Predicate:
    return lambda _facts: answer


def compile_policy(policy: NamedAuthorizationPolicy) -> CompiledPolicy:
    action = policy.spec.action
    on_error = action in (Action.DENY, Action.CUSTOM)
    label = f"{policy.namespace}/{policy.name}"
    rules: list[Predicate] = []
    for index, rule in enumerate(policy.spec.rules):
        try:
            rules.append(compile_rule(rule))
        except ValueError as err:
            log.warning("policy %s: rules[%d] cannot be compiled (%s); counted as %s", label, index, err, on_error)
            rules.append(_constant(on_error))
    provider = policy.spec.provider.name if policy.spec.provider is not None else None
    return CompiledPolicy(label, action, provider, tuple(rules), on_error)


@dataclass(frozen=True, slots=True)
class CustomCheck:
    """A matching CUSTOM policy: the request must be allowed by this provider."""

    policy: str
    provider: str


class Authorizer:
    """The inbound policies of one config version, compiled once and sorted by action."""

    def __init__(self, policies: Iterable[NamedAuthorizationPolicy]) -> None:
        compiled = [compile_policy(p) for p in policies]
        self.custom = tuple(p for p in compiled if p.action == Action.CUSTOM)
        self.deny = tuple(p for p in compiled if p.action == Action.DENY)
        self.allow = tuple(p for p in compiled if p.action == Action.ALLOW)
        self.audit = tuple(p for p in compiled if p.action == Action.AUDIT)
        self.audited: list[str] = []
        """Labels of AUDIT policies that matched, newest last (bounded); for tests and the admin page."""

    def custom_checks(self, facts: RequestFacts) -> list[CustomCheck]:
        """Step 1: the ext-authz providers to ask, one per matching CUSTOM policy."""
        return [CustomCheck(p.label, p.provider or "") for p in self.custom if p.matches(facts)]

    def allowed(self, facts: RequestFacts) -> tuple[bool, str]:
        """Steps 2 and 3 (DENY, then ALLOW), plus AUDIT logging: (allowed, the policy that decided or a reason)."""
        self._audit(facts)
        for policy in self.deny:
            if policy.matches(facts):
                return False, policy.label
        if not self.allow:
            return True, "no ALLOW policy"
        for policy in self.allow:
            if policy.matches(facts):
                return True, policy.label
        return False, "no ALLOW policy matched"

    def _audit(self, facts: RequestFacts) -> None:
        for policy in self.audit:
            if policy.matches(facts):
                log.info(
                    "AUDIT %s: %s %s from %s",
                    policy.label,
                    facts.method,
                    facts.path,
                    facts.principal or facts.source_ip,
                )
                self.audited.append(policy.label)
                del self.audited[:-100]
