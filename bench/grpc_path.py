"""gRPC benchmark: unary calls to a gRPC app directly and through the mesh path (client sidecar -> HTTP/2 inside
mTLS -> server sidecar -> HTTP/2 to the app), closed loop, side by side in one run.

    python -m bench.grpc_path [--duration S] [--concurrency C] [--payload BYTES] [--out DIR]

The app is the demo's gRPC service (services/demoapp/ratings.py) in its own process; the sidecars are real
Sidecars in their own processes (bench/sidecar_process.py, uvloop, metrics on), the server's declared
`--protocol grpc` and the client's cluster endpoint `http2`. The load is grpcio's asyncio client with C calls
in flight. Reported per target: calls/s, p50 / p90 / p99 latency, latency added over the direct call, and CPU
seconds per 1,000 calls and RSS of each sidecar. Numbers are printed and written to DIR/grpc.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import grpc.aio

from bench import reverse_proxies
from bench.dataplane import Processes, start_sidecar, wait_port
from bench.sidecar_process import settings_for
from bench.stats import LatencySummary, cpu_per_thousand, cpu_seconds, rss_mb
from services.citadel.ca import CertificateAuthority
from services.demoapp.ratings import GET
from services.local.processes import free_port
from shared.consul import PROTOCOL_GRPC
from shared.model.proxy_config import ProxyConfig

SERVER = "bench-grpc"


@dataclass(frozen=True)
class GrpcPoint:
    target: str
    calls_per_s: float
    errors: int
    latency: LatencySummary
    added_p50_ms: float
    added_p99_ms: float
    sidecars: dict[str, dict[str, float]]
    """Name -> {"cpu_s", "cpu_s_per_1k", "rss_mb"}."""


def client_config(server_inbound: int, server_identity: str) -> ProxyConfig:
    cluster = f"outbound|80||{SERVER}"
    endpoint = {"address": "127.0.0.1", "port": server_inbound, "identity": server_identity, "http2": True}
    return ProxyConfig.model_validate(
        {
            "proxyId": "bench-grpc-client",
            "service": "bench-grpc-client",
            "namespace": "bench",
            "virtualHosts": [{"name": SERVER, "domains": [SERVER], "routes": [{"route": [{"cluster": cluster}]}]}],
            "clusters": [{"name": cluster, "host": SERVER, "port": 80, "endpoints": [endpoint]}],
        }
    )


async def load(port: int, seconds: float, concurrency: int, payload: bytes) -> tuple[list[float], int, float]:
    """(latencies in seconds, errors, elapsed seconds) of closed-loop unary calls on one channel."""
    latencies: list[float] = []
    errors = 0
    options = [("grpc.default_authority", SERVER)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        call = channel.unary_unary(GET)
        for _ in range(50):  # warm-up: connections, TLS, HTTP/2 settings
            await call(payload, timeout=10)
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    await call(payload, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - started


async def measure(
    name: str, port: int, pids: dict[str, int], args: argparse.Namespace, payload: bytes
) -> tuple[GrpcPoint, list[float]]:
    groups = {key: reverse_proxies.process_tree(pid) for key, pid in pids.items()}
    before = {key: sum(cpu_seconds(p) for p in group) for key, group in groups.items()}
    latencies, errors, elapsed = await load(port, args.duration, args.concurrency, payload)
    calls = len(latencies) + errors
    sidecars = {}
    for key, group in groups.items():
        cpu = sum(cpu_seconds(p) for p in group) - before[key]
        sidecars[key] = {
            "cpu_s": cpu,
            "cpu_s_per_1k": cpu_per_thousand(cpu, calls),
            "rss_mb": sum(rss_mb(p) for p in group),
        }
    summary = LatencySummary.of(latencies)
    point = GrpcPoint(name, len(latencies) / elapsed, errors, summary, float("nan"), float("nan"), sidecars)
    return point, latencies


async def run(args: argparse.Namespace) -> list[GrpcPoint]:
    payload = b"p" * args.payload
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-grpc-") as scratch:
        workdir = Path(scratch)
        processes = Processes(workdir)
        try:
            app_port = free_port()
            app = [sys.executable, "-m", "services.demoapp.ratings", "--service", SERVER, "--port", str(app_port)]
            await processes.start(app, wait_line=False)
            await wait_port(app_port)
            ca_dir = workdir / "ca"
            CertificateAuthority.load_or_create(ca_dir, "cluster.local")
            empty = ProxyConfig(proxy_id=SERVER, service=SERVER, namespace="bench")
            server_pid, server_ports = await start_sidecar(
                processes, workdir, ca_dir, SERVER, app_port, empty, PROTOCOL_GRPC
            )
            identity = settings_for(SERVER, app_port, workdir).spiffe_id
            config = client_config(server_ports["inbound"], identity)
            client_pid, client_ports = await start_sidecar(processes, workdir, ca_dir, "bench-grpc-client", 1, config)
            direct, direct_latencies = await measure("direct", app_port, {}, args, payload)
            mesh, _ = await measure(
                "mesh", client_ports["outbound"], {"client": client_pid, "server": server_pid}, args, payload
            )
        finally:
            await processes.stop_all()
    added = LatencySummary.of(direct_latencies)
    mesh = GrpcPoint(
        mesh.target,
        mesh.calls_per_s,
        mesh.errors,
        mesh.latency,
        mesh.latency.p50_ms - added.p50_ms,
        mesh.latency.p99_ms - added.p99_ms,
        mesh.sidecars,
    )
    return [direct, mesh]


def table(points: list[GrpcPoint]) -> str:
    lines = [
        "| target | calls/s | p50 ms | p90 ms | p99 ms | added p50 | added p99 | CPU s / 1k calls | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        cpu = ", ".join(f"{k} {v['cpu_s_per_1k']:.3f}" for k, v in p.sidecars.items()) or "-"
        rss = ", ".join(f"{k} {v['rss_mb']:.0f}" for k, v in p.sidecars.items()) or "-"
        added = "-" if p.target == "direct" else f"{p.added_p50_ms:.2f}"
        added99 = "-" if p.target == "direct" else f"{p.added_p99_ms:.2f}"
        lines.append(
            f"| {p.target} | {p.calls_per_s:.0f} | {p.latency.p50_ms:.2f} | {p.latency.p90_ms:.2f} | "
            f"{p.latency.p99_ms:.2f} | {added} | {added99} | {cpu} | {rss} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_path", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per target (default 15)")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight (default 16)")
    parser.add_argument("--payload", type=int, default=1024, help="request message bytes (default 1024)")
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="where grpc.json goes (default bench/results)"
    )
    args = parser.parse_args(argv)
    points = asyncio.run(run(args))
    print(table(points))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grpc.json").write_text(json.dumps([asdict(p) for p in points], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
