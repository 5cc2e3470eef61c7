"""Data-plane benchmark arithmetic and response framing: percentiles, added latency, CPU per 1,000 requests."""

from __future__ import annotations

import math
import os

from bench.loadgen import _complete
from bench.report import Point, markdown_table, medians, round_shares, share_line, throughput_ratios
from bench.stats import LatencySummary, added, cpu_per_thousand, cpu_seconds, percentile, rss_mb


def test_nearest_rank_percentiles() -> None:
    ordered = [float(i) for i in range(1, 101)]
    assert percentile(ordered, 0.50) == 50.0
    assert percentile(ordered, 0.99) == 99.0
    assert percentile(ordered, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert math.isnan(percentile([], 0.5))


def test_summary_is_in_milliseconds() -> None:
    summary = LatencySummary.of([0.003, 0.001, 0.002, 0.004])
    assert summary.count == 4
    assert summary.p50_ms == 2.0
    assert summary.max_ms == 4.0
    assert math.isclose(summary.mean_ms, 2.5)
    assert LatencySummary.of([]).count == 0


def test_added_latency_and_cpu_per_thousand() -> None:
    assert math.isclose(added(1.5, 0.25), 1.25)
    assert math.isnan(added(math.nan, 0.25))
    assert cpu_per_thousand(0.4, 2000) == 0.2
    assert math.isnan(cpu_per_thousand(0.4, 0))


def test_own_process_is_readable_from_proc() -> None:
    assert cpu_seconds(os.getpid()) > 0.0
    assert rss_mb(os.getpid()) > 1.0


def test_response_framing() -> None:
    whole = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1"
    assert _complete(bytearray(whole)) == (200, len(whole) - len(b"HTTP/1.1"))
    assert _complete(bytearray(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab")) is None
    chunked = b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert _complete(bytearray(chunked)) == (503, len(chunked))
    assert _complete(bytearray(chunked[:-2])) is None


def test_table_and_throughput_share() -> None:
    summary = LatencySummary.of([0.001])
    points = [
        Point("nginx", "max", None, 1000.0, summary, 0.1, 0.2, 0, 0, 0.0, False, 1.0),
        Point("sidecar", "max", None, 600.0, summary, 0.5, 1.0, 0, 0, 0.0, False, 1.0),
    ]
    assert throughput_ratios(points) == {"nginx": 1.0, "sidecar": 0.6}
    table = markdown_table(points)
    assert "| sidecar | max | 600 |" in table


def _max(target: str, rps: float, round_index: int) -> Point:
    summary = LatencySummary.of([0.001])
    return Point(target, "max", None, rps, summary, 0.1, 0.2, 0, 0, 0.0, False, 1.0, round=round_index)


def test_rounds_share_is_the_median_of_shares_taken_within_each_round() -> None:
    # The machine slows down in round 1: both targets drop, the share holds; a cross-round median of
    # each target's own req/s would say 600 / 1000 in round 0 vs the 300 / 1000 mix.
    points = [
        _max("nginx", 1000.0, 0),
        _max("sidecar", 400.0, 0),
        _max("nginx", 500.0, 1),
        _max("sidecar", 250.0, 1),
        _max("nginx", 800.0, 2),
        _max("sidecar", 360.0, 2),
    ]
    assert round_shares(points, "sidecar") == [0.4, 0.5, 0.45]
    assert throughput_ratios(points)["sidecar"] == 0.45
    assert "sidecar 45% (rounds: 40%, 50%, 45%)" in share_line(points)
    table = medians(points)
    assert [(point.target, point.achieved_rps) for point in table] == [("nginx", 800.0), ("sidecar", 360.0)]


def test_one_round_reports_its_points_as_they_are() -> None:
    points = [_max("nginx", 1000.0, 0), _max("sidecar", 600.0, 0)]
    assert medians(points) == points
    assert "(rounds:" not in share_line(points) and "sidecar 60%" in share_line(points)
