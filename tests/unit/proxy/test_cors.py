"""CORS policy: preflight answers, actual-response headers, origin matching."""

from __future__ import annotations

from services.proxy.cors import CompiledCors
from shared.model.virtual_service import CorsPolicy


def _cors(raw: dict[str, object]) -> CompiledCors:
    compiled = CompiledCors.of(CorsPolicy.model_validate(raw))
    assert compiled is not None
    return compiled


POLICY = {
    "allowOrigins": [{"exact": "https://shop.example"}, {"prefix": "https://dev."}, {"regex": r"https://.*\.corp"}],
    "allowMethods": ["GET", "POST"],
    "allowHeaders": ["x-token"],
    "exposeHeaders": ["x-trace"],
    "maxAge": "24h",
    "allowCredentials": True,
}
PREFLIGHT = {"origin": "https://shop.example", "access-control-request-method": "POST"}


def test_allowed_preflight_is_answered_with_every_header() -> None:
    headers = dict(_cors(POLICY).preflight("OPTIONS", PREFLIGHT) or [])
    assert headers == {
        "Access-Control-Allow-Origin": "https://shop.example",
        "Access-Control-Allow-Methods": "GET,POST",
        "Access-Control-Allow-Headers": "x-token",
        "Access-Control-Max-Age": "86400",
        "Access-Control-Allow-Credentials": "true",
    }


def test_origins_match_exact_prefix_and_regex() -> None:
    cors = _cors(POLICY)
    assert cors.allowed("https://dev.shop") and cors.allowed("https://a.corp")
    assert not cors.allowed("https://evil.example") and not cors.allowed(None) and not cors.allowed("")


def test_not_a_preflight_or_other_origin_is_forwarded() -> None:
    cors = _cors(POLICY)
    assert cors.preflight("GET", PREFLIGHT) is None
    assert cors.preflight("OPTIONS", {"origin": "https://shop.example"}) is None
    assert cors.preflight("OPTIONS", {**PREFLIGHT, "origin": "https://evil.example"}) is None


def test_actual_response_headers() -> None:
    cors = _cors(POLICY)
    assert dict(cors.actual("https://shop.example")) == {
        "Access-Control-Allow-Origin": "https://shop.example",
        "Access-Control-Expose-Headers": "x-trace",
        "Access-Control-Allow-Credentials": "true",
    }
    assert cors.actual("https://evil.example") == []
    assert cors.actual(None) == []


def test_star_origin_answers_star_without_credentials() -> None:
    cors = _cors({"allowOrigins": [{"exact": "*"}]})
    assert dict(cors.actual("https://any.where")) == {"Access-Control-Allow-Origin": "*"}
    with_credentials = _cors({"allowOrigins": [{"exact": "*"}], "allowCredentials": True})
    assert dict(with_credentials.actual("https://any.where"))["Access-Control-Allow-Origin"] == "https://any.where"
    assert CompiledCors.of(None) is None


def test_unmatched_preflights_ignore_is_answered_without_cors_headers() -> None:
    ignore = _cors({**POLICY, "unmatchedPreflights": "IGNORE"})
    assert ignore.preflight("OPTIONS", {**PREFLIGHT, "origin": "https://evil.example"}) == []
    assert dict(ignore.preflight("OPTIONS", PREFLIGHT) or [])["Access-Control-Allow-Origin"] == "https://shop.example"
    assert ignore.preflight("OPTIONS", {"origin": "https://evil.example"}) is None  # not a preflight
    forward = _cors({**POLICY, "unmatchedPreflights": "FORWARD"})
    assert forward.preflight("OPTIONS", {**PREFLIGHT, "origin": "https://evil.example"}) is None
