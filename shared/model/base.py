"""Building blocks of the config model: the frozen camelCase base, durations, percentages, the envelope."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)
from pydantic.alias_generators import to_camel


class Spec(BaseModel):
    """Base of every model type: immutable, Istio's camelCase field names, unknown fields rejected."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        str_strip_whitespace=False,
    )


_DURATION = re.compile(r"^(?P<num>\d+(\.\d+)?)(?P<unit>h|m|s|ms|us|µs|ns)$")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: Any) -> float:
    """Istio/protobuf duration text ("1s", "0.5s", "250ms", "1h") or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is text like '1s' or '250ms', not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value.strip())
        if not match:
            raise ValueError(f"{value!r} is not a duration like '1s', '0.5s', '250ms' or '1h'")
        seconds = float(match["num"]) * _UNIT_SECONDS[match["unit"]]
    else:
        raise ValueError(f"a duration is text like '1s', got {type(value).__name__}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    return f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]
"""Seconds as float inside the model; serialized back as Istio duration text."""


def refused(message: str) -> Any:
    """A field Isthmus parses only to refuse: any value given is an error with `message` (and the field's path),
    rather than pydantic's bare "extra inputs are not permitted". Use as `Annotated[Any, refused("...")] = None`."""

    def check(value: Any) -> Any:
        if value is not None:
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _check_percent(value: float) -> float:
    if not 0.0 <= value <= 100.0:
        raise ValueError("a percentage must be between 0 and 100")
    return value


class Percent(Spec):
    value: Annotated[float, AfterValidator(_check_percent)] = 0.0


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_dns_label(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(f"{value!r} must be a lower-case DNS label: letters, digits and '-', at most 63 characters")
    return value


class Metadata(Spec):
    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    resource_version: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
            raise ValueError(f"{value!r} must be a lower-case DNS name: letters, digits, '-' and '.'")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return check_dns_label(value)


class WorkloadSelector(Spec):
    match_labels: dict[str, str] = Field(default_factory=dict)

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.match_labels.items())


_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


class LabelSelector(Spec):
    """A networking resource's `workloadSelector`: the workloads whose labels include all of these."""

    labels: dict[str, str]

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("needs at least one label: an empty selector would choose every workload of the namespace")
        for key, label in value.items():
            if "*" in key or "*" in label:
                raise ValueError(f"{key}: wildcards are not supported in a selector")
            if not _LABEL_KEY.match(key) or len(key.rpartition("/")[2]) > 63:
                raise ValueError(f"{key!r} is not a label key")
            if len(label) > 63 or not _LABEL_VALUE.match(label):
                raise ValueError(f"{key}: {label!r} is not a label value")
        return value
