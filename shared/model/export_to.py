"""`exportTo` of VirtualService, DestinationRule and ServiceEntry: which callers' namespaces see the resource.

Istio's visibility (istio.io networking reference, `exportTo` of each kind; pilot's push context): entries are
`.` (the resource's own namespace), `*` (every namespace) or namespace names; an empty list means every
namespace (Istio's default `defaultVirtualServiceExportTo` and friends is `*`). A ServiceEntry may also say `~`,
visible to no namespace. Validation follows Istio's `validateExportTo`: each entry is `.`, `*`, a DNS label (or
`~` for a ServiceEntry); no entry twice; `*` or `~` only alone. Pilot reads the result with `visible_to` when it
builds a caller's config; a resource that `restricts` nothing is visible everywhere, as before exportTo existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import AfterValidator

from shared.model.base import check_dns_label

PUBLIC = "*"
PRIVATE = "."
NONE = "~"


def _entry(value: str) -> str:
    if value in (PUBLIC, PRIVATE, NONE):
        return value
    try:
        return check_dns_label(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not '.', '*' or a namespace name (a lower-case DNS label: letters, digits and '-', "
            "at most 63 characters)"
        ) from None


def _combination(value: list[str], none_allowed: bool) -> list[str]:
    for i, item in enumerate(value):
        if item in value[:i]:
            raise ValueError(f"{item!r} is listed twice (exportTo[{value.index(item)}] and exportTo[{i}])")
        if item == NONE and not none_allowed:
            raise ValueError(f"'~' (exportTo[{i}], visible to no namespace) is only for a ServiceEntry")
    for alone, meaning in ((PUBLIC, "every namespace"), (NONE, "no namespace")):
        if alone in value and len(value) > 1:
            raise ValueError(
                f"{alone!r} (exportTo[{value.index(alone)}], {meaning}) cannot be combined with other entries"
            )
    return value


def _resource_export_to(value: list[str]) -> list[str]:
    return _combination(value, none_allowed=False)


def _entry_export_to(value: list[str]) -> list[str]:
    return _combination(value, none_allowed=True)


ExportTo = Annotated[list[Annotated[str, AfterValidator(_entry)]], AfterValidator(_resource_export_to)]
"""`exportTo` of a VirtualService or DestinationRule: `.`, `*` or namespace names."""

EntryExportTo = Annotated[list[Annotated[str, AfterValidator(_entry)]], AfterValidator(_entry_export_to)]
"""`exportTo` of a ServiceEntry, which may also be `~` (visible to no namespace)."""


def restricts(export_to: Sequence[str]) -> bool:
    """Whether some namespace does not see the resource (an empty list or `*`: every namespace does)."""
    return bool(export_to) and PUBLIC not in export_to


def audience(export_to: Sequence[str], namespace: str) -> frozenset[str]:
    """The namespaces a restricting resource in `namespace` is visible to (`.` read as `namespace`)."""
    return frozenset(namespace if item == PRIVATE else item for item in export_to if item != NONE)


def seen_together(first: tuple[Sequence[str], str], second: tuple[Sequence[str], str]) -> bool:
    """Whether some caller namespace sees both resources, each given as (exportTo, its namespace)."""
    first_restricts, second_restricts = restricts(first[0]), restricts(second[0])
    if not first_restricts and not second_restricts:
        return True
    if not first_restricts:
        return bool(audience(*second))
    if not second_restricts:
        return bool(audience(*first))
    return bool(audience(*first) & audience(*second))


def visible_to(export_to: Sequence[str], namespace: str, caller_namespace: str) -> bool:
    """Whether a resource in `namespace` with this `exportTo` applies to a caller in `caller_namespace`."""
    return not restricts(export_to) or caller_namespace in audience(export_to, namespace)
