"""AuthorizationPolicy for TCP connections: the HTTP policies rewritten to connection-level fields, as Istio does.

A TCP connection has no method, path, host, headers or JWT, so Istio's rules for HTTP-only fields
(`requestPrincipals`, `hosts`, `methods`, `paths` and their `not` forms, `request.*` conditions) apply:
- in an ALLOW (or AUDIT) policy a rule using any of them never matches TCP traffic: it is dropped, and an
  ALLOW policy left without rules still counts as an ALLOW policy present, so it denies;
- in a DENY policy the HTTP-only fields are removed and the rest of the rule stands (denying more, never less);
- a CUSTOM policy cannot be asked here (ext-authz is HTTP), so it acts as DENY with the same rewrite:
  fail closed.
The rewritten policies go through the same Authorizer as HTTP (CUSTOM -> DENY -> ALLOW), once per config
version; a denial closes the connection before a byte reaches the app.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.proxy.authz import Authorizer
from shared.model.authorization_policy import Action, Condition, Rule, RuleFrom, RuleTo
from shared.model.proxy_config import NamedAuthorizationPolicy

_HTTP_SOURCE = ("request_principals", "not_request_principals")
_HTTP_OPERATION = ("hosts", "not_hosts", "methods", "not_methods", "paths", "not_paths")


def _http_condition(condition: Condition) -> bool:
    return condition.key.startswith("request.")


def uses_http_fields(rule: Rule) -> bool:
    return (
        any(getattr(item.source, name) for item in rule.from_ for name in _HTTP_SOURCE)
        or any(getattr(item.operation, name) for item in rule.to for name in _HTTP_OPERATION)
        or any(_http_condition(condition) for condition in rule.when)
    )


def without_http_fields(rule: Rule) -> Rule:
    """The rule with every HTTP-only field removed (what a DENY rule means for TCP)."""
    sources = [RuleFrom(source=item.source.model_copy(update={key: [] for key in _HTTP_SOURCE})) for item in rule.from_]
    operations = [
        RuleTo(operation=item.operation.model_copy(update={key: [] for key in _HTTP_OPERATION})) for item in rule.to
    ]
    conditions = [condition for condition in rule.when if not _http_condition(condition)]
    return Rule.model_validate({"from": sources, "to": operations, "when": conditions})


def for_tcp(policy: NamedAuthorizationPolicy) -> NamedAuthorizationPolicy:
    spec = policy.spec
    if spec.action in (Action.ALLOW, Action.AUDIT):
        rules = [rule for rule in spec.rules if not uses_http_fields(rule)]
        update: dict[str, object] = {"rules": rules}
    else:
        update = {"rules": [without_http_fields(rule) for rule in spec.rules], "action": Action.DENY, "provider": None}
    return policy.model_copy(update={"spec": spec.model_copy(update=update)})


def tcp_authorizer(policies: Iterable[NamedAuthorizationPolicy]) -> Authorizer:
    return Authorizer(for_tcp(policy) for policy in policies)
