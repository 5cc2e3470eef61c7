"""ext-authz provider flags: NAME=URL pairs, with errors naming the bad item."""

from __future__ import annotations

import pytest

from services.proxy.ext_authz import parse_providers


def test_providers_parse() -> None:
    assert parse_providers(["opa=http://127.0.0.1:9191/", "b=https://authz:1/check"]) == {
        "opa": "http://127.0.0.1:9191",
        "b": "https://authz:1/check",
    }


@pytest.mark.parametrize("item", ["opa", "=http://x", "opa=ftp://x", "opa="])
def test_bad_provider_is_named(item: str) -> None:
    with pytest.raises(ValueError, match="--ext-authz"):
        parse_providers([item])
