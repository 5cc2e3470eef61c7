"""Data-plane benchmark output: one `Point` per target and load, written as JSON and as a Markdown table."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import LatencySummary


@dataclass(frozen=True)
class ProcessSample:
    """One proxy process during one point: CPU per 1,000 requests and resident memory at the end."""

    name: str
    cpu_s: float
    cpu_s_per_1k: float
    rss_mb: float


@dataclass(frozen=True)
class Point:
    target: str
    load: str
    offered_rps: float | None
    achieved_rps: float
    latency: LatencySummary
    added_p50_ms: float
    added_p99_ms: float
    errors: int
    non_2xx: int
    timer_lag_p99_ms: float
    behind: bool
    generator_cpu_s: float
    processes: list[ProcessSample] = field(default_factory=list)
    round: int = 0
    """Which pass over every target and load this point belongs to (`--rounds`)."""


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _signed_ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.2f}"


def _processes(point: Point, key: str, digits: int) -> str:
    if not point.processes:
        return "-"
    parts = []
    for sample in point.processes:
        value = getattr(sample, key)
        parts.append(f"{sample.name} {'-' if math.isnan(value) else f'{value:.{digits}f}'}")
    return ", ".join(parts)


def markdown_table(points: list[Point]) -> str:
    lines = [
        "| target | load | req/s | p50 ms | p90 ms | p99 ms | added p50 | added p99 "
        "| CPU s / 1k req (per process) | RSS MB | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for point in points:
        rate = f"{point.achieved_rps:,.0f}" + (" (behind)" if point.behind else "")
        lines.append(
            f"| {point.target} | {point.load} | {rate} | {_ms(point.latency.p50_ms)} | {_ms(point.latency.p90_ms)} "
            f"| {_ms(point.latency.p99_ms)} | {_signed_ms(point.added_p50_ms)} | {_signed_ms(point.added_p99_ms)} "
            f"| {_processes(point, 'cpu_s_per_1k', 3)} | {_processes(point, 'rss_mb', 0)} "
            f"| {point.errors + point.non_2xx} |"
        )
    return "\n".join(lines) + "\n"


def throughput_ratios(points: list[Point], reference: str = "nginx") -> dict[str, float]:
    """Max-throughput req/s of each target as a fraction of `reference`'s, the median over the rounds (each
    round's share is taken within that round, so the machine's drift between rounds cancels); empty without
    the reference."""
    shares: dict[str, list[float]] = {}
    for round_points in _by_round(points).values():
        best = {point.target: point.achieved_rps for point in round_points if point.offered_rps is None}
        base = best.get(reference)
        if base:
            for target, rps in best.items():
                shares.setdefault(target, []).append(rps / base)
    return {target: statistics.median(values) for target, values in shares.items()}


def round_shares(points: list[Point], target: str, reference: str = "nginx") -> list[float]:
    """`target`'s max throughput as a fraction of `reference`'s in each round that measured both."""
    found = []
    for round_points in _by_round(points).values():
        best = {point.target: point.achieved_rps for point in round_points if point.offered_rps is None}
        if best.get(reference) and target in best:
            found.append(best[target] / best[reference])
    return found


def medians(points: list[Point]) -> list[Point]:
    """One point per target and load, in first-seen order: with several rounds, the round with the median
    requests/s at max and the median p99 at a fixed rate (the upper median for an even count)."""
    groups: dict[tuple[str, str], list[Point]] = {}
    for point in points:
        groups.setdefault((point.target, point.load), []).append(point)
    chosen = []
    for group in groups.values():
        if group[0].offered_rps is None:
            ordered = sorted(group, key=lambda point: point.achieved_rps)
        else:
            ordered = sorted(group, key=lambda point: point.latency.p99_ms)
        chosen.append(ordered[len(ordered) // 2])
    return chosen


def _by_round(points: list[Point]) -> dict[int, list[Point]]:
    rounds: dict[int, list[Point]] = {}
    for point in points:
        rounds.setdefault(point.round, []).append(point)
    return rounds


def share_line(points: list[Point]) -> str:
    """Max throughput as a share of nginx's (the median over rounds, and each round's when there are several)."""
    ratios = throughput_ratios(points)
    if not ratios:
        return ""
    several = len(_by_round(points)) > 1
    parts = []
    for target, share in ratios.items():
        rounds = round_shares(points, target) if several else []
        each = f" (rounds: {', '.join(f'{value:.0%}' for value in rounds)})" if len(rounds) > 1 else ""
        parts.append(f"{target} {share:.0%}{each}")
    median = "median over rounds, " if several else ""
    return f"Max throughput as a share of nginx's ({median}each round's share taken within it): {', '.join(parts)}."


def write(points: list[Point], meta: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """dataplane.json (every number) and dataplane.md (the table and the run's settings)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "dataplane.json"
    json_path.write_text(json.dumps({"meta": meta, "points": [asdict(point) for point in points]}, indent=2) + "\n")
    lines = [markdown_table(medians(points))]
    shares = share_line(points)
    if shares:
        lines.append(f"\n{shares}\n")
    lines.append("\n" + ", ".join(f"{key}: {value}" for key, value in meta.items()) + "\n")
    md_path = out_dir / "dataplane.md"
    md_path.write_text("".join(lines))
    return json_path, md_path
