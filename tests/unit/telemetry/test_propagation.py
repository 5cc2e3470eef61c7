"""Trace headers in and out: W3C, B3 single and B3 multi-header."""

from __future__ import annotations

from opentelemetry.trace import SpanContext, TraceFlags, get_current_span

from services.proxy.telemetry.propagation import extract, inject

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def parent(headers: dict[str, str]) -> SpanContext | None:
    context = extract(headers)
    return get_current_span(context).get_span_context() if context is not None else None


def test_w3c_wins_over_b3() -> None:
    found = parent({"traceparent": f"00-{TRACE}-{SPAN}-01", "x-b3-traceid": "1" * 32, "x-b3-spanid": "2" * 16})
    assert found is not None and format(found.trace_id, "032x") == TRACE and found.trace_flags.sampled


def test_b3_single_and_multi() -> None:
    single = parent({"b3": f"{TRACE}-{SPAN}-0"})
    assert single is not None and format(single.span_id, "016x") == SPAN and not single.trace_flags.sampled
    multi = parent({"x-b3-traceid": TRACE[16:], "x-b3-spanid": SPAN, "x-b3-sampled": "1"})
    assert multi is not None and multi.trace_id == int(TRACE[16:], 16) and multi.trace_flags.sampled
    debug = parent({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-flags": "1"})
    assert debug is not None and debug.trace_flags.sampled


def test_garbage_starts_a_new_trace() -> None:
    assert parent({}) is None
    assert parent({"x-b3-traceid": "zz", "x-b3-spanid": SPAN}) is None
    assert parent({"b3": "0"}) is None


def test_inject_replaces_every_format_and_keeps_single_b3_only_when_used() -> None:
    context = SpanContext(int(TRACE, 16), int(SPAN, 16), is_remote=False, trace_flags=TraceFlags(1))
    headers = {"b3": "stale", "x-b3-parentspanid": "old", "tracestate": "old=1"}
    inject(context, headers, parent_span_id=0xABC)
    assert headers["traceparent"] == f"00-{TRACE}-{SPAN}-01"
    assert headers["b3"] == f"{TRACE}-{SPAN}-1"
    assert headers["x-b3-parentspanid"] == "0000000000000abc"
    assert "tracestate" not in headers
    plain: dict[str, str] = {}
    inject(context, plain, parent_span_id=None)
    assert "b3" not in plain and "x-b3-parentspanid" not in plain and plain["x-b3-sampled"] == "1"
