"""Kind names as people type them (Istio's plural and short forms, any case) mapped to the model's kinds."""

from __future__ import annotations

from shared.model import KINDS, UnknownKind

_SHORT_FORMS: dict[str, str] = {
    "vs": "VirtualService",
    "dr": "DestinationRule",
    "se": "ServiceEntry",
    "we": "WorkloadEntry",
    "gw": "Gateway",
    "pa": "PeerAuthentication",
    "ap": "AuthorizationPolicy",
}


def _aliases() -> dict[str, str]:
    table = dict(_SHORT_FORMS)
    for kind in KINDS:
        lower = kind.lower()
        table[lower] = kind
        consonant_y = lower.endswith("y") and lower[-2] not in "aeiou"
        table[lower[:-1] + "ies" if consonant_y else lower + "s"] = kind
    return table


_ALIASES = _aliases()


def kind_names() -> str:
    """Every kind as typed on the command line, with its short form: 'authorizationpolicy|ap, ...'."""
    short = {kind: name for name, kind in _SHORT_FORMS.items()}
    return ", ".join(f"{kind.lower()}|{short[kind]}" if kind in short else kind.lower() for kind in sorted(KINDS))


def resolve_kind(text: str) -> str:
    """'vs', 'VirtualServices', 'virtualservice' -> 'VirtualService'; unknown names raise UnknownKind."""
    kind = _ALIASES.get(text.strip().lower())
    if kind is None:
        raise UnknownKind(
            f"kind {text!r} is not supported; use one of {', '.join(sorted(KINDS))} "
            f"(or {', '.join(sorted(_SHORT_FORMS))})"
        )
    return kind
