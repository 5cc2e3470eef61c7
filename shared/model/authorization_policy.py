"""AuthorizationPolicy: CUSTOM, DENY, ALLOW and AUDIT rules over sources, operations and conditions."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from shared.model.base import Spec, WorkloadSelector


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


class Operation(Spec):
    hosts: list[str] = Field(default_factory=list)
    not_hosts: list[str] = Field(default_factory=list)
    ports: list[str] = Field(default_factory=list)
    not_ports: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)
    not_methods: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    not_paths: list[str] = Field(default_factory=list)


class RuleFrom(Spec):
    source: Source


class RuleTo(Spec):
    operation: Operation


class Condition(Spec):
    key: str = Field(min_length=1)
    values: list[str] = Field(default_factory=list)
    not_values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_values(self) -> Condition:
        if not self.values and not self.not_values:
            raise ValueError("at least one of values or notValues must be set")
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
