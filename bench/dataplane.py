"""Data-plane benchmark: direct call, one sidecar, the mTLS mesh path, nginx and haproxy on one upstream, one run.

`python -m bench.dataplane` (or `make bench`) starts a 1 KB HTTP/1.1 upstream (bench/upstream.py), a citadel
CA, two sidecars as separate processes (bench/sidecar_process.py), nginx and haproxy (bench/reverse_proxies.py),
then measures every target at each load point in turn (open loop at 500 and 1,000 requests/s, then closed
loop for max throughput; 16 keep-alive connections; bench/loadgen.py):

  direct   client -> upstream
  bare     client -> bare pass-through (bench/bare_proxy.py: the sidecar's parsers, no mesh feature) -> upstream
  sidecar  client -> client sidecar outbound -> upstream (plain text)
  mesh     client -> client sidecar outbound -> mTLS -> server sidecar inbound -> upstream

Per target and point: p50 / p90 / p99, added latency over direct, achieved requests/s, CPU seconds per
1,000 requests per proxy process (utime+stime deltas from /proc/<pid>/stat) and RSS (VmRSS). Writes
dataplane.json and dataplane.md under --out. Numbers are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import uvloop

from bench import reverse_proxies
from bench.loadgen import request_bytes, run_load
from bench.report import Point, ProcessSample, markdown_table, medians, share_line, write
from bench.sidecar_process import settings_for
from bench.stats import added, cpu_per_thousand, cpu_seconds, rss_mb
from services.citadel.ca import CertificateAuthority
from services.local.processes import free_port
from shared.model.proxy_config import ProxyConfig

SERVER = "bench-server"
PLAIN = "plain-upstream"
CONNECT_WAIT = 30.0


@dataclass
class Target:
    name: str
    port: int
    host_header: str
    processes: dict[str, int] = field(default_factory=dict)
    """Name -> pid of each proxy process whose CPU and memory the target costs (with its children)."""


class Processes:
    """Every process the run started, stopped (SIGTERM, then SIGKILL) when the run ends."""

    def __init__(self, log_dir: Path) -> None:
        self._started: list[asyncio.subprocess.Process] = []
        self._log_dir = log_dir

    async def start(self, argv: list[str], wait_line: bool) -> tuple[asyncio.subprocess.Process, str]:
        """Start `argv` (stderr to a log file in the run's dir); with `wait_line`, wait for its first stdout
        line (its ready signal) and return it."""
        log_path = self._log_dir / f"process-{len(self._started)}.log"
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE if wait_line else asyncio.subprocess.DEVNULL, stderr=log_file
            )
        self._started.append(process)
        line = ""
        if wait_line:
            assert process.stdout is not None
            async with asyncio.timeout(CONNECT_WAIT):
                line = (await process.stdout.readline()).decode().strip()
            if not line:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{' '.join(argv[:3])} exited before it was ready:\n{tail}")
        return process, line

    async def stop_all(self) -> None:
        for process in reversed(self._started):
            if process.returncode is None:
                process.terminate()
        for process in reversed(self._started):
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def wait_port(port: int) -> None:
    deadline = time.monotonic() + CONNECT_WAIT
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def _cluster(host: str, address: str, port: int, identity: str | None) -> dict[str, object]:
    endpoint: dict[str, object] = {"address": address, "port": port}
    if identity is not None:
        endpoint["identity"] = identity
    return {"name": f"outbound|80||{host}", "host": host, "port": 80, "endpoints": [endpoint]}


def client_config(server_inbound: int, server_identity: str, upstream_port: int) -> ProxyConfig:
    """The client sidecar's routes: `bench-server` over mTLS to the server sidecar, `plain-upstream` direct."""
    hosts = [(SERVER, server_inbound, server_identity), (PLAIN, upstream_port, None)]
    return ProxyConfig.model_validate(
        {
            "proxyId": "bench-client",
            "service": "bench-client",
            "namespace": "bench",
            "virtualHosts": [
                {
                    "name": host,
                    "domains": [host],
                    "routes": [{"name": host, "route": [{"cluster": f"outbound|80||{host}"}]}],
                }
                for host, _, _ in hosts
            ],
            "clusters": [_cluster(host, "127.0.0.1", port, identity) for host, port, identity in hosts],
        }
    )


async def start_sidecar(
    processes: Processes,
    workdir: Path,
    ca_dir: Path,
    service: str,
    app_port: int,
    config: ProxyConfig,
    protocol: str = "http",
) -> tuple[int, dict[str, int]]:
    config_path = workdir / f"{service}.json"
    config_path.write_bytes(config.to_json())
    argv = [sys.executable, "-m", "bench.sidecar_process", "--ca-dir", str(ca_dir), "--service", service]
    argv += ["--app-port", str(app_port), "--config", str(config_path), "--state-dir", str(workdir / service)]
    argv += ["--protocol", protocol]
    process, line = await processes.start(argv, wait_line=True)
    return process.pid, dict(json.loads(line)["ports"])


@contextlib.asynccontextmanager
async def targets(workdir: Path, skip_baselines: bool) -> AsyncIterator[list[Target]]:
    processes = Processes(workdir)
    try:
        upstream_port = free_port()
        await processes.start([sys.executable, "-m", "bench.upstream", "--port", str(upstream_port)], wait_line=True)
        found: list[Target] = [Target("direct", upstream_port, f"127.0.0.1:{upstream_port}")]
        found.append(await _bare(processes, upstream_port))
        ca_dir = workdir / "ca"
        CertificateAuthority.load_or_create(ca_dir, "cluster.local")
        empty = ProxyConfig(proxy_id=SERVER, service=SERVER, namespace="bench")
        server_pid, server_ports = await start_sidecar(processes, workdir, ca_dir, SERVER, upstream_port, empty)
        identity = settings_for(SERVER, upstream_port, workdir).spiffe_id
        config = client_config(server_ports["inbound"], identity, upstream_port)
        client_pid, client_ports = await start_sidecar(processes, workdir, ca_dir, "bench-client", 1, config)
        found.append(Target("sidecar", client_ports["outbound"], PLAIN, {"sidecar": client_pid}))
        found.append(Target("mesh", client_ports["outbound"], SERVER, {"client": client_pid, "server": server_pid}))
        if not skip_baselines:
            found += await _baselines(processes, workdir, upstream_port)
        yield found
    finally:
        await processes.stop_all()


async def _bare(processes: Processes, upstream_port: int) -> Target:
    port = free_port()
    argv = [sys.executable, "-m", "bench.bare_proxy", "--port", str(port), "--upstream-port", str(upstream_port)]
    process, _ = await processes.start(argv, wait_line=True)
    return Target("bare", port, f"127.0.0.1:{port}", {"bare": process.pid})


async def _baselines(processes: Processes, workdir: Path, upstream_port: int) -> list[Target]:
    binaries = await asyncio.to_thread(reverse_proxies.ensure_installed, ["nginx", "haproxy"])
    builders = {"nginx": reverse_proxies.nginx, "haproxy": reverse_proxies.haproxy}
    found = []
    for name, binary in binaries.items():
        baseline = builders[name](binary, workdir / name, free_port(), upstream_port)
        process, _ = await processes.start(baseline.argv, wait_line=False)
        try:
            await wait_port(baseline.port)
        except OSError as err:
            print(f"skipping {name}: did not start listening ({err})")
            continue
        found.append(Target(name, baseline.port, f"127.0.0.1:{baseline.port}", {name: process.pid}))
    return found


def _pids(target: Target) -> dict[str, list[int]]:
    return {name: reverse_proxies.process_tree(pid) for name, pid in target.processes.items()}


async def measure(target: Target, load: str, rate: float | None, args: argparse.Namespace) -> Point:
    payload = request_bytes(target.host_header)
    pids = _pids(target)
    warmup = args.warmup
    # CPU is read around the recorded window only (the generator's warm-up is excluded).
    before: dict[str, float] = {}

    async def sample_start() -> None:
        await asyncio.sleep(warmup + 0.05)
        before.update({name: sum(cpu_seconds(pid) for pid in group) for name, group in pids.items()})

    sampler = asyncio.create_task(sample_start())
    own_before = time.process_time()
    result = await run_load("127.0.0.1", target.port, payload, args.duration, args.connections, rate, warmup_s=warmup)
    await sampler
    own_cpu = time.process_time() - own_before
    requests = len(result.latencies_s) + result.errors
    samples = []
    for name, group in pids.items():
        cpu = sum(cpu_seconds(pid) for pid in group) - before[name]
        samples.append(ProcessSample(name, cpu, cpu_per_thousand(cpu, requests), sum(rss_mb(pid) for pid in group)))
    summary = result.summary
    return Point(
        target=target.name,
        load=load,
        offered_rps=rate,
        achieved_rps=result.achieved_rps,
        latency=summary,
        added_p50_ms=float("nan"),
        added_p99_ms=float("nan"),
        errors=result.errors,
        non_2xx=result.non_2xx,
        timer_lag_p99_ms=result.timer_lag_p99_ms,
        behind=result.behind,
        generator_cpu_s=own_cpu,
        processes=samples,
    )


def with_added(points: list[Point]) -> list[Point]:
    """Fill in the latency each target adds over the direct call at the same load."""
    direct = {(point.round, point.load): point for point in points if point.target == "direct"}
    done = []
    for point in points:
        base = direct.get((point.round, point.load))
        if base is not None and point.target != "direct":
            point = replace(
                point,
                added_p50_ms=added(point.latency.p50_ms, base.latency.p50_ms),
                added_p99_ms=added(point.latency.p99_ms, base.latency.p99_ms),
            )
        done.append(point)
    return done


async def run(args: argparse.Namespace) -> list[Point]:
    loads: list[tuple[str, float | None]] = [(f"{rate:,} rps", float(rate)) for rate in args.rates]
    loads.append(("max", None))
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-") as tmp:
        async with targets(Path(tmp), args.no_baselines) as found:
            chosen = [t for t in found if not args.targets or t.name in args.targets]
            for round_index in range(args.rounds):
                for load, rate in loads:
                    for target in chosen:
                        point = replace(await measure(target, load, rate, args), round=round_index)
                        points.append(point)
                        lag = f", generator timer lag p99 {point.timer_lag_p99_ms:.1f} ms" if rate else ""
                        behind = " BEHIND the offered rate" if point.behind else ""
                        print(
                            f"{target.name:>8} {load:>9}: {point.achieved_rps:8,.0f} req/s{behind}, "
                            f"p50 {point.latency.p50_ms:.2f} p99 {point.latency.p99_ms:.2f} ms{lag}",
                            flush=True,
                        )
    return with_added(points)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dataplane", description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[500, 1000], help="open-loop rates, requests/s")
    parser.add_argument("--duration", type=float, default=8.0, help="recorded seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before each point")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="passes over every target and load, interleaved; the table shows the median round of each",
    )
    parser.add_argument("--targets", nargs="*", default=[], help="only these (direct bare sidecar mesh nginx haproxy)")
    parser.add_argument("--no-baselines", action="store_true", help="skip nginx and haproxy")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per point (about a minute)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="directory for JSON and Markdown")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 2.0, 0.5
    return args


def interpreter() -> str:
    """The CPython binary everything Python in the run uses (the load generator, upstream, bare proxy and
    sidecars all run on `sys.executable`): per-request costs depend on how it was built."""
    return os.path.realpath(sys.executable)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    print(f"python {platform.python_version()} ({interpreter()})", flush=True)
    points = uvloop.run(run(args))
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.dataplane " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "interpreter": interpreter(),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "rounds": args.rounds,
        "wall_s": round(time.monotonic() - started, 1),
    }
    json_path, md_path = write(points, meta, args.out)
    print()
    print(markdown_table(medians(points)))
    shares = share_line(points)
    if shares:
        print(shares)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
