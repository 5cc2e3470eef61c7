"""Inbound filter after peer authentication: AuthorizationPolicy (CUSTOM, then DENY, then ALLOW), failing closed."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from shared.identity.spiffe import InvalidSpiffeId, parse_spiffe_id
from shared.model.authorization_policy import Action, Condition, Operation, Rule, Source
from shared.model.proxy_config import NamedAuthorizationPolicy

DENIED_BODY = "RBAC: access denied"


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

    @property
    def principal(self) -> str | None:
        if self.peer_spiffe_id is None:
            return None
        try:
            return parse_spiffe_id(self.peer_spiffe_id).principal
        except InvalidSpiffeId:
            return None

    @property
    def namespace(self) -> str | None:
        if self.peer_spiffe_id is None:
            return None
        try:
            return parse_spiffe_id(self.peer_spiffe_id).namespace
        except InvalidSpiffeId:
            return None


def value_matches(pattern: str, value: str | None) -> bool:
    """Istio's string form: exact, `prefix*`, `*suffix` or `*`."""
    if value is None:
        return False
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _field(values: Sequence[str], not_values: Sequence[str], value: str | None) -> bool:
    """Values ORed inside one field; an empty list does not constrain."""
    if values and not any(value_matches(p, value) for p in values):
        return False
    return not (not_values and any(value_matches(p, value) for p in not_values))


def _in_blocks(blocks: Sequence[str], ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return any(address in ipaddress.ip_network(block, strict=False) for block in blocks)


def _ip_field(values: Sequence[str], not_values: Sequence[str], ip: str) -> bool:
    if values and not _in_blocks(values, ip):
        return False
    return not (not_values and _in_blocks(not_values, ip))


def _source_matches(source: Source, facts: RequestFacts) -> bool:
    if source.request_principals or source.not_request_principals:
        raise ValueError("requestPrincipals need request authentication, which this proxy does not do")
    return (
        _field(source.principals, source.not_principals, facts.principal)
        and _field(source.namespaces, source.not_namespaces, facts.namespace)
        and _ip_field(source.ip_blocks, source.not_ip_blocks, facts.source_ip)
        and _ip_field(source.remote_ip_blocks, source.not_remote_ip_blocks, facts.source_ip)
    )


def _operation_matches(operation: Operation, facts: RequestFacts) -> bool:
    return (
        _field(operation.hosts, operation.not_hosts, facts.host)
        and _field(operation.ports, operation.not_ports, str(facts.port))
        and _field(operation.methods, operation.not_methods, facts.method)
        and _field(operation.paths, operation.not_paths, facts.path.partition("?")[0])
    )


def _condition_value(key: str, facts: RequestFacts) -> str | None:
    simple: dict[str, Callable[[RequestFacts], str | None]] = {
        "source.principal": lambda f: f.principal,
        "source.namespace": lambda f: f.namespace,
        "source.ip": lambda f: f.source_ip,
        "remote.ip": lambda f: f.source_ip,
        "destination.port": lambda f: str(f.port),
        "request.method": lambda f: f.method,
    }
    if key in simple:
        return simple[key](facts)
    if key.startswith("request.headers[") and key.endswith("]"):
        return facts.headers.get(key[len("request.headers[") : -1].lower())
    raise ValueError(f"condition key {key!r} is not supported")


def _condition_matches(condition: Condition, facts: RequestFacts) -> bool:
    return _field(condition.values, condition.not_values, _condition_value(condition.key, facts))


def _rule_matches(rule: Rule, facts: RequestFacts) -> bool:
    if rule.from_ and not any(_source_matches(item.source, facts) for item in rule.from_):
        return False
    if rule.to and not any(_operation_matches(item.operation, facts) for item in rule.to):
        return False
    return all(_condition_matches(condition, facts) for condition in rule.when)


def _policy_matches(policy: NamedAuthorizationPolicy, facts: RequestFacts, on_error: bool) -> bool:
    """Whether any rule matches; an unsupported or broken rule counts as `on_error` (the closed answer)."""
    for rule in policy.spec.rules:
        try:
            if _rule_matches(rule, facts):
                return True
        except ValueError:
            if on_error:
                return True
    return False


class Authorizer:
    """The inbound policies of one config version, pre-sorted by action."""

    def __init__(self, policies: Iterable[NamedAuthorizationPolicy]) -> None:
        policies = list(policies)
        self._custom = [p for p in policies if p.spec.action == Action.CUSTOM]
        self._deny = [p for p in policies if p.spec.action == Action.DENY]
        self._allow = [p for p in policies if p.spec.action == Action.ALLOW]

    def allowed(self, facts: RequestFacts) -> tuple[bool, str]:
        """(allowed, the policy that decided or a reason)."""
        # No external authorizer is wired in: a matching CUSTOM policy denies.
        for policy in self._custom:
            if _policy_matches(policy, facts, on_error=True):
                return False, f"{policy.namespace}/{policy.name} (CUSTOM, no provider)"
        for policy in self._deny:
            if _policy_matches(policy, facts, on_error=True):
                return False, f"{policy.namespace}/{policy.name}"
        if not self._allow:
            return True, "no ALLOW policy"
        for policy in self._allow:
            if _policy_matches(policy, facts, on_error=False):
                return True, f"{policy.namespace}/{policy.name}"
        return False, "no ALLOW policy matched"
