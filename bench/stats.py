"""Data-plane benchmark arithmetic: latency percentiles of one run and per-process CPU and memory from /proc."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (NaN when empty)."""
    if not ordered:
        return math.nan
    rank = math.ceil(fraction * len(ordered))
    return ordered[min(len(ordered), max(1, rank)) - 1]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latencies of one measurement point, in milliseconds."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, latencies_s: Sequence[float]) -> LatencySummary:
        ordered = sorted(latencies_s)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            count=len(ordered),
            p50_ms=percentile(ordered, 0.50) * 1000.0,
            p90_ms=percentile(ordered, 0.90) * 1000.0,
            p99_ms=percentile(ordered, 0.99) * 1000.0,
            max_ms=ordered[-1] * 1000.0,
            mean_ms=sum(ordered) / len(ordered) * 1000.0,
        )


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (0.0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces; the numeric fields start after its closing parenthesis.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) in MB (0.0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def cpu_per_thousand(cpu_delta_s: float, requests: int) -> float:
    """CPU seconds a process spent per 1,000 requests served (NaN without requests)."""
    return cpu_delta_s / requests * 1000.0 if requests else math.nan


def added(value_ms: float, baseline_ms: float) -> float:
    """Latency a target adds over the direct call at the same point (NaN when either is unknown)."""
    if math.isnan(value_ms) or math.isnan(baseline_ms):
        return math.nan
    return value_ms - baseline_ms
