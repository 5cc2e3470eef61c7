"""AuthorizationPolicy: CUSTOM, DENY, ALLOW and AUDIT rules over sources, operations and conditions.

Validation follows istioctl: every `when` key must be one the proxy can evaluate (an unknown key is an
error here, at apply time, rather than a rule silently ignored at run time); IP blocks must parse as an
address or CIDR; ports must be integers in 1-65535. String values use Istio's forms: exact, `prefix*`,
`*suffix` and `*`.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from shared.model.base import Spec, WorkloadSelector

SIMPLE_CONDITION_KEYS = frozenset(
    {
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.principal",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "destination.ip",
        "destination.port",
        "connection.sni",
    }
)
"""Condition keys without an argument; `request.headers[name]` and `request.auth.claims[name]...` also exist."""

HEADER_KEY = re.compile(r"^request\.headers\[([^\[\]]+)\]$")
CLAIM_KEY = re.compile(r"^request\.auth\.claims((?:\[[^\[\]]+\])+)$")
_CLAIM_PART = re.compile(r"\[([^\[\]]+)\]")
IP_CONDITION_KEYS = frozenset({"source.ip", "remote.ip", "destination.ip"})


def claim_path(key: str) -> tuple[str, ...] | None:
    """`request.auth.claims[a][b]` -> ("a", "b"); None when the key is not a claim key."""
    match = CLAIM_KEY.match(key)
    if match is None:
        return None
    return tuple(_CLAIM_PART.findall(match.group(1)))


def check_condition_key(key: str) -> str:
    if key in SIMPLE_CONDITION_KEYS or HEADER_KEY.match(key) or CLAIM_KEY.match(key):
        return key
    raise ValueError(
        f"condition key {key!r} is not supported; use request.headers[<name>], request.auth.claims[<name>], "
        f"or one of {', '.join(sorted(SIMPLE_CONDITION_KEYS))}"
    )


def check_ip_block(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as err:
        raise ValueError(f"{value!r} is not an IP address or CIDR block") from err
    return value


def check_port(value: str) -> str:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(f"{value!r} is not a port (an integer in 1-65535)")
    return value


class Action(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"
    AUDIT = "AUDIT"
    CUSTOM = "CUSTOM"


class Source(Spec):
    principals: list[str] = Field(default_factory=list)
    not_principals: list[str] = Field(default_factory=list)
    request_principals: list[str] = Field(default_factory=list)
    not_request_principals: list[str] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    not_namespaces: list[str] = Field(default_factory=list)
    ip_blocks: list[str] = Field(default_factory=list)
    not_ip_blocks: list[str] = Field(default_factory=list)
    remote_ip_blocks: list[str] = Field(default_factory=list)
    not_remote_ip_blocks: list[str] = Field(default_factory=list)

    @field_validator("ip_blocks", "not_ip_blocks", "remote_ip_blocks", "not_remote_ip_blocks")
    @classmethod
    def _blocks(cls, value: list[str]) -> list[str]:
        return [check_ip_block(block) for block in value]


class Operation(Spec):
    hosts: list[str] = Field(default_factory=list)
    not_hosts: list[str] = Field(default_factory=list)
    ports: list[str] = Field(default_factory=list)
    not_ports: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)
    not_methods: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    not_paths: list[str] = Field(default_factory=list)

    @field_validator("ports", "not_ports")
    @classmethod
    def _ports(cls, value: list[str]) -> list[str]:
        return [check_port(port) for port in value]


class RuleFrom(Spec):
    source: Source


class RuleTo(Spec):
    operation: Operation


class Condition(Spec):
    key: str = Field(min_length=1)
    values: list[str] = Field(default_factory=list)
    not_values: list[str] = Field(default_factory=list)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_condition_key(value)

    @model_validator(mode="after")
    def _some_values(self) -> Condition:
        if not self.values and not self.not_values:
            raise ValueError("at least one of values or notValues must be set")
        for value in (*self.values, *self.not_values):
            if self.key in IP_CONDITION_KEYS:
                check_ip_block(value)
            elif self.key == "destination.port":
                check_port(value)
        return self


class Rule(Spec):
    from_: list[RuleFrom] = Field(default_factory=list, alias="from")
    to: list[RuleTo] = Field(default_factory=list)
    when: list[Condition] = Field(default_factory=list)


class ExtensionProvider(Spec):
    name: str = Field(min_length=1)


class AuthorizationPolicySpec(Spec):
    selector: WorkloadSelector | None = None
    action: Action = Action.ALLOW
    rules: list[Rule] = Field(default_factory=list)
    provider: ExtensionProvider | None = None

    @model_validator(mode="after")
    def _provider_for_custom(self) -> AuthorizationPolicySpec:
        if (self.action == Action.CUSTOM) != (self.provider is not None):
            raise ValueError("provider must be set for action CUSTOM and only for CUSTOM")
        return self
