"""Access log lines: Istio's default text format, JSON, errors-only, never blocking when the writer lags."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import replace

import pytest

from services.proxy.telemetry import access_log
from services.proxy.telemetry.access_log import AccessLog, AccessRecord, format_json, format_text

RECORD = AccessRecord(
    start_time=1795714684.123,
    method="GET",
    path="/pay",
    protocol="HTTP/1.1",
    response_code=200,
    response_flags="-",
    bytes_received=0,
    bytes_sent=42,
    duration_ms=3,
    x_forwarded_for="",
    user_agent="curl/8.0",
    request_id="rid",
    authority="payment-service",
    upstream_host="10.0.0.2:15006",
    upstream_cluster="outbound|80||payment-service",
    downstream_local_address="127.0.0.1:15001",
    downstream_remote_address="127.0.0.1:39000",
    route_name="default",
)


def test_text_format_mirrors_istio_default() -> None:
    assert format_text(RECORD) == (
        '[2026-11-26T17:38:04.123Z] "GET /pay HTTP/1.1" 200 - via_upstream - "-" 0 42 3 - "-" "curl/8.0" "rid" '
        '"payment-service" "10.0.0.2:15006" outbound|80||payment-service - 127.0.0.1:15001 127.0.0.1:39000 - default'
    )


def test_local_reply_details_follow_the_last_flag() -> None:
    line = format_text(replace(RECORD, response_code=503, response_flags="URX,UF"))
    assert '" 503 URX,UF upstream_reset_before_response_started{connection_failure} ' in line


def test_json_format() -> None:
    body = json.loads(format_json(RECORD))
    assert body["start_time"] == "2026-11-26T17:38:04.123Z"
    assert body["response_code_details"] == "via_upstream"
    assert body["upstream_cluster"] == "outbound|80||payment-service"
    assert body["x_forwarded_for"] is None


def test_errors_only_keeps_failures() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, errors_only=True)
    log.log(RECORD)
    log.log(replace(RECORD, response_code=404, response_flags="NR"))
    log.log(replace(RECORD, response_code=0, response_flags="DC"))
    log.close()
    lines = stream.getvalue().splitlines()
    assert [line.split('" ')[1].split()[0] for line in lines] == ["404", "0"]


class BlockedStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait(10)
        return super().write(text)


def test_a_stuck_writer_drops_lines_instead_of_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access_log, "QUEUE_SIZE", 2)
    stream = BlockedStream()
    log = AccessLog(stream)
    for _ in range(10):
        log.log(RECORD)  # returns at once even though the writer is stuck
    assert log.dropped >= 7
    stream.release.set()
    log.close()
    assert 1 <= len(stream.getvalue().splitlines()) <= 3
