"""Redirect Location building and direct response bodies."""

from __future__ import annotations

import pytest

from services.proxy.redirect import direct_body, location, split_authority
from shared.model.virtual_service import HTTPDirectResponse, HTTPRedirect


def _redirect(raw: dict[str, object]) -> HTTPRedirect:
    return HTTPRedirect.model_validate(raw)


@pytest.mark.parametrize(
    ("raw", "authority", "path", "port", "expected"),
    [
        ({"uri": "/v2/items"}, "shop", "/v1/items?page=2", None, "http://shop/v2/items?page=2"),
        ({"uri": "/new?x=1"}, "shop", "/old?page=2", None, "http://shop/new?x=1"),
        ({"authority": "new.shop"}, "shop:8080", "/a", 8080, "http://new.shop:8080/a"),
        ({"authority": "new.shop:9000"}, "shop:8080", "/a", 8080, "http://new.shop:9000/a"),
        ({"scheme": "https", "derivePort": "FROM_PROTOCOL_DEFAULT"}, "shop:8080", "/a", 8080, "https://shop/a"),
        ({"port": 8443, "scheme": "https"}, "shop", "/a", None, "https://shop:8443/a"),
        ({"derivePort": "FROM_REQUEST_PORT", "authority": "x"}, "shop:81", "/", 81, "http://x:81/"),
        ({"port": 80}, "shop:8080", "/", 8080, "http://shop/"),
        ({"uri": "/b"}, "[::1]:8080", "/a", 8080, "http://[::1]:8080/b"),
    ],
)
def test_location(raw: dict[str, object], authority: str, path: str, port: int | None, expected: str) -> None:
    assert location(_redirect(raw), authority, path, port) == expected


def test_split_authority() -> None:
    assert split_authority("a:1") == ("a", 1)
    assert split_authority("[::1]") == ("[::1]", None)
    assert split_authority("a") == ("a", None)


def test_direct_body_from_string_or_base64() -> None:
    assert direct_body(HTTPDirectResponse.model_validate({"status": 503, "body": {"string": "down"}})) == b"down"
    assert direct_body(HTTPDirectResponse.model_validate({"status": 200, "body": {"bytes": "aGk="}})) == b"hi"
    assert direct_body(HTTPDirectResponse.model_validate({"status": 204})) == b""


def test_a_redirect_without_scheme_keeps_the_requests() -> None:
    """On a gateway's HTTPS server the request came in over https: a redirect that names no scheme stays there."""
    assert location(_redirect({"uri": "/b"}), "shop", "/a", None, "https") == "https://shop/b"
    assert location(_redirect({"uri": "/b", "scheme": "http"}), "shop", "/a", None, "https") == "http://shop/b"
