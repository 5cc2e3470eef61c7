"""One request through two in-process sidecars: Istio metrics on both sides, access log lines, one OTLP trace."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.proxy.sidecar import Sidecar
from tests.integration.telemetry.conftest import (
    MeshFactory,
    Receiver,
    apply_config,
    empty_config,
    eventually,
    route_to,
)

pytestmark = pytest.mark.integration

APP_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN_ID = "00f067aa0ba902b7"


async def scrape(sidecar: Sidecar, path: str = "/metrics") -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    port = sidecar.listeners["prometheus"].port
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as reply:
        assert reply.status == 200
        text = await reply.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def series(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (found, have), value in samples.items() if found == name and wanted <= have)


async def call(sidecar: Sidecar, path: str, host: str = "reviews", **headers: str) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{sidecar.listeners['outbound'].port}{path}"
        async with session.get(url, headers={"Host": host, "User-Agent": "telemetry-test", **headers}) as reply:
            await reply.read()
            return reply


async def test_one_request_gives_metrics_logs_and_one_trace(
    make_sidecar: MeshFactory, otlp: tuple[Receiver, str], tmp_path: Path
) -> None:
    receiver, endpoint = otlp
    caller_log, callee_log = tmp_path / "caller.log", tmp_path / "callee.log"
    caller = await make_sidecar("productpage", trace_endpoint=endpoint, access_log_file=str(caller_log))
    callee = await make_sidecar("reviews", "v2", trace_endpoint=endpoint, access_log_file=str(callee_log))
    apply_config(caller, route_to(caller, callee))
    apply_config(callee, empty_config(callee))

    traceparent = f"00-{APP_TRACE_ID}-{APP_SPAN_ID}-01"
    reply = await call(caller, "/reviews/1?x=1", traceparent=traceparent, **{"x-request-id": "rid-1"})
    assert reply.status == 200

    # Metrics: reporter=source on the caller, reporter=destination on the callee, Istio's labels.
    source = await scrape(caller)
    assert (
        series(
            source,
            "istio_requests_total",
            reporter="source",
            source_workload="productpage-v1",
            source_app="productpage",
            source_principal="spiffe://cluster.local/ns/default/sa/productpage",
            destination_workload="reviews-v2",
            destination_version="v2",
            destination_principal="spiffe://cluster.local/ns/default/sa/reviews",
            destination_service="reviews",
            destination_service_namespace="default",
            request_protocol="http",
            response_code="200",
            response_flags="-",
            connection_security_policy="unknown",
        )
        == 1
    )
    assert series(source, "istio_request_duration_milliseconds_count", reporter="source") == 1
    assert series(source, "istio_response_bytes_sum", reporter="source") == len("hello from the app")
    destination = await scrape(callee, "/stats/prometheus")
    assert (
        series(
            destination,
            "istio_requests_total",
            reporter="destination",
            source_principal="spiffe://cluster.local/ns/default/sa/productpage",
            source_workload_namespace="default",
            destination_app="reviews",
            destination_version="v2",
            response_code="200",
            connection_security_policy="mutual_tls",
        )
        == 1
    )
    assert series(destination, "isthmus_proxy_config_info", version=callee.state.snapshot.version) == 1  # type: ignore[union-attr]
    assert series(destination, "isthmus_proxy_cert_expiry_timestamp_seconds") > 0
    # Proxy health: open connections per listener, and per outbound cluster in-flight and ejected hosts.
    assert ("isthmus_proxy_open_connections", frozenset({("listener", "inbound")})) in destination
    cluster = frozenset({("cluster", "outbound|80||reviews")})
    assert source[("isthmus_proxy_cluster_ejected_hosts", cluster)] == 0
    assert source[("isthmus_proxy_cluster_requests_active", cluster)] == 0

    # Access logs: Istio's default text format, written by the background writer.
    line = re.compile(
        r'^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET /reviews/1\?x=1 HTTP/1\.1" '
        r'200 - via_upstream - "-" 0 18 \d+ - '
        r'"-" "telemetry-test" "rid-1" "reviews" "127\.0\.0\.1:\d+" outbound\|80\|\|reviews - 127\.0\.0\.1:\d+ '
        r"127\.0\.0\.1:\d+ - r1$"
    )
    await eventually(lambda: caller_log.exists() and bool(caller_log.read_text()), 10, "the caller's access log")
    assert line.match(caller_log.read_text().splitlines()[0]), caller_log.read_text()
    await eventually(lambda: callee_log.exists() and bool(callee_log.read_text()), 10, "the callee's access log")
    assert f"inbound|{callee.settings.inbound_port}||" in callee_log.read_text()

    # Tracing: client span (caller) -> server span (callee), both in the app's trace.
    await eventually(lambda: len(receiver.spans) >= 2, 20, "two spans at the OTLP receiver")
    by_service = {service: span for service, span in receiver.spans}
    client, server = by_service["productpage.default"], by_service["reviews.default"]
    assert client.trace_id.hex() == server.trace_id.hex() == APP_TRACE_ID
    assert client.parent_span_id.hex() == APP_SPAN_ID
    assert server.parent_span_id == client.span_id
    assert client.kind == client.SPAN_KIND_CLIENT and server.kind == server.SPAN_KIND_SERVER
    attributes = {a.key: a.value for a in client.attributes}
    assert attributes["upstream_cluster"].string_value == "outbound|80||reviews"
    assert attributes["http.status_code"].int_value == 200
    assert attributes["guid:x-request-id"].string_value == "rid-1"
    # The app behind the callee sees the server span as its parent, in W3C and B3 form.
    seen = callee.app.seen[-1]  # type: ignore[attr-defined]
    assert seen["traceparent"] == f"00-{APP_TRACE_ID}-{server.span_id.hex()}-01"
    assert seen["x-b3-traceid"] == APP_TRACE_ID and seen["x-b3-spanid"] == server.span_id.hex()
    assert seen["x-b3-parentspanid"] == client.span_id.hex()


async def test_local_replies_report_their_flag_and_errors_only_logs_skip_successes(
    make_sidecar: MeshFactory, tmp_path: Path
) -> None:
    log = tmp_path / "errors.log"
    caller = await make_sidecar("productpage", access_log_file=str(log), access_log_errors_only=True)
    callee = await make_sidecar("reviews")
    apply_config(caller, route_to(caller, callee))
    apply_config(callee, empty_config(callee))

    assert (await call(caller, "/ok")).status == 200
    assert (await call(caller, "/x", host="nowhere")).status == 404
    assert (await call(caller, "/fail")).status == 503

    samples = await scrape(caller)
    assert series(samples, "istio_requests_total", response_code="404", response_flags="NR") == 1
    assert series(samples, "istio_requests_total", response_code="404", destination_service="unknown") == 1
    assert series(samples, "istio_requests_total", response_code="503", response_flags="-") == 1
    await eventually(lambda: log.exists() and len(log.read_text().splitlines()) == 2, 10, "two error lines")
    lines = log.read_text().splitlines()
    assert '" 404 NR route_not_found ' in lines[0]
    assert '" 503 - via_upstream ' in lines[1]
    assert not any(" 200 " in line for line in lines)


async def test_b3_single_header_continues_the_trace(make_sidecar: MeshFactory, otlp: tuple[Receiver, str]) -> None:
    receiver, endpoint = otlp
    caller = await make_sidecar("productpage", trace_endpoint=endpoint)
    callee = await make_sidecar("reviews", trace_endpoint=endpoint)
    apply_config(caller, route_to(caller, callee))
    apply_config(callee, empty_config(callee))

    await call(caller, "/", b3=f"{APP_TRACE_ID}-{APP_SPAN_ID}-1")

    await eventually(lambda: len(receiver.spans) >= 2, 20, "two spans at the OTLP receiver")
    assert {span.trace_id.hex() for _, span in receiver.spans} == {APP_TRACE_ID}
    seen = callee.app.seen[-1]  # type: ignore[attr-defined]
    assert seen["b3"].startswith(f"{APP_TRACE_ID}-") and seen["b3"].endswith("-1")


async def test_spans_go_over_otlp_http_to_a_traces_url(
    make_sidecar: MeshFactory, otlp_http: tuple[Receiver, str]
) -> None:
    receiver, url = otlp_http
    caller = await make_sidecar("productpage", trace_endpoint=url)
    callee = await make_sidecar("reviews", trace_endpoint=url)
    apply_config(caller, route_to(caller, callee))
    apply_config(callee, empty_config(callee))

    await call(caller, "/", traceparent=f"00-{APP_TRACE_ID}-{APP_SPAN_ID}-01")

    await eventually(lambda: len(receiver.spans) >= 2, 20, "two spans at the OTLP/HTTP receiver")
    assert {span.trace_id.hex() for _, span in receiver.spans} == {APP_TRACE_ID}
    assert {service for service, _ in receiver.spans} == {"productpage.default", "reviews.default"}
