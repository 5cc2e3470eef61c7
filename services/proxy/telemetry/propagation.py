"""Trace context on the wire: W3C `traceparent`/`tracestate`, B3 multi-header (`x-b3-*`) and B3 single (`b3`).

Extraction prefers W3C, then single `b3`, then the multi headers (Envoy's order when several are present).
Injection writes W3C and B3 multi-header so both kinds of app tracer continue the trace, and rewrites a
single `b3` header only when the caller used that form. Sampling decisions travel with the context.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry.context import Context
from opentelemetry.trace import (
    INVALID_SPAN_ID,
    INVALID_TRACE_ID,
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

W3C = TraceContextTextMapPropagator()
B3_SINGLE = "b3"
B3_TRACE_ID = "x-b3-traceid"
B3_SPAN_ID = "x-b3-spanid"
B3_PARENT_SPAN_ID = "x-b3-parentspanid"
B3_SAMPLED = "x-b3-sampled"
B3_FLAGS = "x-b3-flags"
TRACE_HEADERS = ("traceparent", "tracestate", B3_SINGLE, B3_TRACE_ID, B3_SPAN_ID, B3_PARENT_SPAN_ID, B3_SAMPLED)


def _hex_id(text: str | None, digits: int) -> int | None:
    if not text or len(text) > digits:
        return None
    try:
        value = int(text, 16)
    except ValueError:
        return None
    return value or None


def _b3_context(trace_id: str | None, span_id: str | None, sampled: str | None) -> SpanContext | None:
    trace = _hex_id(trace_id, 32)
    span = _hex_id(span_id, 16)
    if trace is None or span is None:
        return None
    flags = TraceFlags(TraceFlags.SAMPLED if sampled in ("1", "d", "true") else TraceFlags.DEFAULT)
    return SpanContext(trace, span, is_remote=True, trace_flags=flags)


def _b3(headers: Mapping[str, str]) -> SpanContext | None:
    single = headers.get(B3_SINGLE)
    if single:
        parts = single.split("-")
        if len(parts) >= 2:
            return _b3_context(parts[0], parts[1], parts[2] if len(parts) > 2 else None)
    sampled = "1" if headers.get(B3_FLAGS) == "1" else headers.get(B3_SAMPLED)
    return _b3_context(headers.get(B3_TRACE_ID), headers.get(B3_SPAN_ID), sampled)


def extract(headers: Mapping[str, str]) -> Context | None:
    """The caller's span context as a parent, or None to start a new trace."""
    if headers.get("traceparent"):
        context = W3C.extract(headers)
        if context:
            return context
    remote = _b3(headers)
    if remote is None:
        return None
    return set_span_in_context(NonRecordingSpan(remote))


def inject(span_context: SpanContext, headers: MutableMapping[str, str], parent_span_id: int | None) -> None:
    """Replace every trace header with ones naming `span_context` as the current span."""
    had_single = B3_SINGLE in headers
    for name in TRACE_HEADERS:
        headers.pop(name, None)
    if span_context.trace_id == INVALID_TRACE_ID or span_context.span_id == INVALID_SPAN_ID:
        return
    W3C.inject(headers, set_span_in_context(NonRecordingSpan(span_context)))
    trace_id = format(span_context.trace_id, "032x")
    span_id = format(span_context.span_id, "016x")
    sampled = "1" if span_context.trace_flags.sampled else "0"
    headers[B3_TRACE_ID] = trace_id
    headers[B3_SPAN_ID] = span_id
    headers[B3_SAMPLED] = sampled
    if parent_span_id:
        headers[B3_PARENT_SPAN_ID] = format(parent_span_id, "016x")
    if had_single:
        headers[B3_SINGLE] = f"{trace_id}-{span_id}-{sampled}"
