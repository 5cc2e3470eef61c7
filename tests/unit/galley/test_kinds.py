"""Kind names as typed on the command line resolve to the model's kinds."""

from __future__ import annotations

import pytest

from services.galley.kinds import kind_names, resolve_kind
from shared.model import KINDS, UnknownKind


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("vs", "VirtualService"),
        ("VirtualService", "VirtualService"),
        ("virtualservices", "VirtualService"),
        ("DR", "DestinationRule"),
        ("destinationrule", "DestinationRule"),
        ("pa", "PeerAuthentication"),
        ("PeerAuthentications", "PeerAuthentication"),
        ("ap", "AuthorizationPolicy"),
        ("authorizationpolicies", "AuthorizationPolicy"),
        ("gw", "Gateway"),
        ("gateways", "Gateway"),
    ],
)
def test_resolve(text: str, kind: str) -> None:
    assert resolve_kind(text) == kind


def test_unknown_kind_lists_choices() -> None:
    with pytest.raises(UnknownKind, match="'envoyfilter' is not supported; use one of AuthorizationPolicy"):
        resolve_kind("envoyfilter")


def test_the_command_line_help_names_every_kind_and_resolves_each_name() -> None:
    names = kind_names()
    for kind in KINDS:
        assert kind.lower() in names
    for entry in names.split(", "):
        for form in entry.split("|"):
            assert resolve_kind(form) in KINDS
