"""Istio's StringMatch (exact / prefix / regex), with the regex compiled once at validation time."""

from __future__ import annotations

import re
from functools import cached_property

from pydantic import model_validator

from shared.model.base import Spec


class StringMatch(Spec):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StringMatch:
        given = [name for name in ("exact", "prefix", "regex") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of exact, prefix or regex must be set (got {given or 'none'})")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as err:
                raise ValueError(f"regex {self.regex!r} does not compile: {err}") from err
        return self

    @cached_property
    def _compiled(self) -> re.Pattern[str] | None:
        return re.compile(self.regex) if self.regex is not None else None

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.exact is not None:
            return value == self.exact
        if self.prefix is not None:
            return value.startswith(self.prefix)
        compiled = self._compiled
        assert compiled is not None, "StringMatch validated with no field set"
        return compiled.fullmatch(value) is not None
