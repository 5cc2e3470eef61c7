"""Control-plane benchmark: apply -> every proxy ACKed, and pilot's CPU and memory, at 10 / 100 / 1,000 proxies.

`python -m bench.controlplane` starts its own nats-server and Consul dev agent, registers `--services`
(1,000) plain services in Consul through the agent API, then for each proxy count: registers that many
meshed instances (each declaring `--upstreams` upstreams, one of them the shared "hot" service), starts a
real pilot process, and simulates the proxies as lightweight KV watchers over one NATS connection that
parse each config they are sent and write an ACK to PROXY_STATUS_BUCKET, the way a sidecar does. Each
round stores a changed DestinationRule for the hot service through galley's ConfigStore (as `isthmus
apply` would) and times it until every proxy has ACKed the new version. Pilot's CPU (utime+stime from
/proc) and RSS (VmRSS, VmHWM) are read around the rounds. Prints a table and writes JSON.

Everything is local (loopback) and bounded in time; the numbers depend on the machine, so they are
reported, never asserted. `--upstreams 0` gives every proxy the whole catalog (no scoping). `--resources N`
stores N more of each of VirtualService (a 2 s timeout), DestinationRule (LEAST_REQUEST) for the first N
services, and AuthorizationPolicy (ALLOW from the bench namespace, spread over 20 namespaces), before pilot
starts, so generation runs against a realistic config size too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.aio.client import Client as NatsClient
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from services.galley.store import ConfigStore
from services.local.infra import start_consul, start_nats
from services.local.processes import Supervisor, free_port
from services.pilot.app import open_bucket
from services.proxy.kv import KV_OPERATION_HEADER, kv_subject
from shared.bus.codec import Ack
from shared.bus.names import PROXY_CONFIG_BUCKET, PROXY_STATUS_BUCKET, proxy_key
from shared.consul import META_MESH, META_NAMESPACE, META_PROXY_ID, META_SERVICE_ACCOUNT, META_UPSTREAMS
from shared.model import parse_resource

NAMESPACE = "bench"
HOT = "svc-hot"
POLICIES = ("ROUND_ROBIN", "RANDOM", "LEAST_REQUEST")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    proxies: int
    services: int
    upstreams: int
    resources: int
    rounds: int
    initial_sync_s: float
    convergence_p50_s: float
    convergence_p99_s: float
    convergence_max_s: float
    proxy_ack_p50_s: float
    proxy_ack_p99_s: float
    pilot_cpu_percent: float
    pilot_cpu_seconds_per_round: float
    pilot_rss_mb: float
    pilot_peak_rss_mb: float
    config_bytes: int
    pilot_convergence_reported_mean_s: float | None
    samples_s: list[float] = field(default_factory=list)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_memory_mb(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


class Consul:
    def __init__(self, session: aiohttp.ClientSession, addr: str) -> None:
        self._session = session
        self._base = f"http://{addr}/v1/agent/service"

    async def register(self, body: dict[str, Any]) -> None:
        async with self._session.put(f"{self._base}/register", json=body) as reply:
            if reply.status != 200:
                raise RuntimeError(f"consul refused {body['ID']}: {await reply.text()}")

    async def deregister(self, service_id: str) -> None:
        async with self._session.put(f"{self._base}/deregister/{service_id}") as reply:
            await reply.read()

    async def many(self, calls: list[Any], width: int = 16) -> None:
        for start in range(0, len(calls), width):
            await asyncio.gather(*calls[start : start + width])


def service_name(index: int) -> str:
    return f"svc-{index:04d}"


def plain_instance(index: int) -> dict[str, Any]:
    name = service_name(index) if index >= 0 else HOT
    return {"ID": f"{name}-1", "Name": name, "Address": "127.0.0.1", "Port": 20000 + (index % 40000)}


def proxy_instance(index: int, services: int, upstreams: int) -> dict[str, Any]:
    proxy_id = f"proxy-{index:04d}"
    meta = {META_MESH: "true", META_PROXY_ID: proxy_id, META_NAMESPACE: NAMESPACE, META_SERVICE_ACCOUNT: "bench"}
    if upstreams:
        picked = [HOT] + [service_name((index * 7 + k) % services) for k in range(upstreams - 1)]
        meta[META_UPSTREAMS] = ",".join(picked)
    return {"ID": proxy_id, "Name": f"client-{index % 50:02d}", "Address": "127.0.0.1",
            "Port": 30000 + index, "Meta": meta}  # fmt: skip


class SimulatedProxies:
    """N proxies over one NATS connection, following their keys the way the sidecar does (a subscription on the
    key's KV subject plus a direct get per notification; no JetStream consumer each), ACKing what they parse."""

    def __init__(self, nc: NatsClient, ids: list[str]) -> None:
        self._nc = nc
        self._ids = ids
        self.versions: dict[str, str] = {}
        self.acked_at: dict[tuple[str, str], float] = {}
        self.config_bytes = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriptions: list[Any] = []

    async def start(self) -> None:
        js = self._nc.jetstream()
        configs = await open_bucket(js, PROXY_CONFIG_BUCKET)
        status = await open_bucket(js, PROXY_STATUS_BUCKET)
        for proxy_id in self._ids:
            updates: asyncio.Queue[bytes | None] = asyncio.Queue()

            async def published(msg: Any, updates: asyncio.Queue[bytes | None] = updates) -> None:
                if not (msg.headers or {}).get(KV_OPERATION_HEADER) and msg.data:
                    updates.put_nowait(msg.data)

            subject = kv_subject(PROXY_CONFIG_BUCKET, proxy_key(proxy_id))
            self._subscriptions.append(await self._nc.subscribe(subject, cb=published))
            updates.put_nowait(None)
            self._tasks.append(asyncio.create_task(self._follow(proxy_id, updates, configs, status)))

    async def _follow(
        self, proxy_id: str, updates: asyncio.Queue[bytes | None], configs: KeyValue, status: KeyValue
    ) -> None:
        last: bytes | None = None
        while True:
            value = await updates.get()
            if value is None:
                try:
                    value = (await configs.get(proxy_key(proxy_id))).value
                except (KeyNotFoundError, KeyDeletedError):
                    continue
            if not value or value == last:
                continue
            last = value
            config = json.loads(value)  # a real proxy validates it into its model; JSON parse is the floor
            version = str(config["version"])
            self.config_bytes = max(self.config_bytes, len(value))
            ack = Ack(proxy_id=proxy_id, version=version, accepted=True, applied_version=version, timestamp=time.time())
            await status.put(proxy_key(proxy_id), ack.to_json())
            self.versions[proxy_id] = version
            self.acked_at[(proxy_id, version)] = time.monotonic()

    def all_acked(self) -> bool:
        return len(self.versions) == len(self._ids)

    def distinct(self) -> set[str]:
        return set(self.versions.values())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for subscription in self._subscriptions:
            try:
                await subscription.unsubscribe()
            except Exception:
                pass


def hot_rule(policy: str) -> Any:
    return parse_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": HOT, "namespace": NAMESPACE},
            "spec": {"host": f"{HOT}.service.consul", "trafficPolicy": {"loadBalancer": {"simple": policy}}},
        }
    )


def background_resources(count: int) -> list[Any]:
    """`count` each of VirtualService, DestinationRule and AuthorizationPolicy that every push carries along."""
    made = []
    for index in range(count):
        host = f"{service_name(index)}.service.consul"
        meta = {"name": f"bg-{index:04d}", "namespace": NAMESPACE}
        made.append(
            {"kind": "VirtualService", "metadata": meta,
             "spec": {"hosts": [host], "http": [{"timeout": "2s", "route": [{"destination": {"host": host}}]}]}}
        )  # fmt: skip
        made.append(
            {"kind": "DestinationRule", "metadata": meta,
             "spec": {"host": host, "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}}}}
        )  # fmt: skip
        made.append(
            {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
             "metadata": {"name": f"bg-{index:04d}", "namespace": f"team-{index % 20:02d}"},
             "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": [NAMESPACE]}}]}]}}
        )  # fmt: skip
    return [parse_resource({"apiVersion": "networking.istio.io/v1", **body}) for body in made]


async def wait_for(check: Any, limit: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit:
            raise TimeoutError(f"{what}: not within {limit}s")
        await asyncio.sleep(0.002)
    return time.monotonic() - started


def pilot_reported(port: int) -> float | None:
    try:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        if line.startswith(("pilot_convergence_seconds_sum ", "pilot_convergence_seconds_count ")):
            name, value = line.split()
            values[name] = float(value)
    count = values.get("pilot_convergence_seconds_count", 0.0)
    return values["pilot_convergence_seconds_sum"] / count if count else None


async def run_scale(args: argparse.Namespace, proxies: int, nats_url: str, consul_addr: str, logs: Path) -> Result:
    async with aiohttp.ClientSession() as session:
        consul = Consul(session, consul_addr)
        bodies = [proxy_instance(i, args.services, args.upstreams) for i in range(proxies)]
        await consul.many([consul.register(body) for body in bodies])
        nc = await nats.connect(nats_url, name="bench-proxies")
        store = await ConfigStore.open(nc.jetstream())
        await store.apply([hot_rule(POLICIES[0]), *background_resources(args.resources)])
        simulated = SimulatedProxies(nc, [body["ID"] for body in bodies])
        await simulated.start()
        port = free_port()
        log = (logs / f"pilot-{proxies}.log").open("wb")
        pilot = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.pilot", "--nats-url", nats_url, "--consul-addr", consul_addr,
            "--listen", f"127.0.0.1:{port}", "--log-level", "WARNING",
            stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            started = time.monotonic()
            await wait_for(simulated.all_acked, args.timeout, f"{proxies} proxies get their first config")
            initial = time.monotonic() - started
            await asyncio.sleep(1.0)  # let the catalog settle (late health reads) before timing changes
            cpu_before, wall_before = proc_cpu_seconds(pilot.pid), time.monotonic()
            samples: list[float] = []
            per_proxy: list[float] = []
            for round_number in range(1, args.rounds + 1):
                previous = simulated.distinct()
                t0 = time.monotonic()
                await store.apply([hot_rule(POLICIES[round_number % len(POLICIES)])])

                def changed(previous: set[str] = previous) -> bool:
                    return simulated.all_acked() and not (simulated.distinct() & previous)

                took = await wait_for(changed, args.timeout, f"round {round_number}: every proxy ACKs")
                samples.append(took)
                for key, at in list(simulated.acked_at.items()):
                    if key[1] not in previous and at >= t0:
                        per_proxy.append(at - t0)
                simulated.acked_at.clear()
                await asyncio.sleep(args.pause)
            cpu = proc_cpu_seconds(pilot.pid) - cpu_before
            wall = time.monotonic() - wall_before
            rss, peak = proc_memory_mb(pilot.pid)
            reported = pilot_reported(port)
        finally:
            pilot.terminate()
            await asyncio.wait_for(pilot.wait(), 30)
            log.close()
            await simulated.stop()
            await consul.many([consul.deregister(body["ID"]) for body in bodies])
            js = nc.jetstream()
            for bucket in (PROXY_CONFIG_BUCKET, PROXY_STATUS_BUCKET):
                try:
                    await js.delete_key_value(bucket)
                except Exception:
                    pass
            await nc.close()
    return Result(
        proxies=proxies,
        services=args.services,
        upstreams=args.upstreams,
        resources=args.resources,
        rounds=args.rounds,
        initial_sync_s=initial,
        convergence_p50_s=percentile(samples, 0.5),
        convergence_p99_s=percentile(samples, 0.99),
        convergence_max_s=max(samples),
        proxy_ack_p50_s=percentile(per_proxy, 0.5),
        proxy_ack_p99_s=percentile(per_proxy, 0.99),
        pilot_cpu_percent=100 * cpu / wall if wall else 0.0,
        pilot_cpu_seconds_per_round=cpu / args.rounds,
        pilot_rss_mb=rss,
        pilot_peak_rss_mb=peak,
        config_bytes=simulated.config_bytes,
        pilot_convergence_reported_mean_s=reported,
        samples_s=samples,
    )


def table(results: list[Result]) -> str:
    header = ("proxies", "initial sync", "conv p50", "conv p99", "conv max", "proxy p99",
              "pilot CPU", "CPU s/round", "RSS MB", "peak MB", "config B")  # fmt: skip
    rows = [header] + [
        (str(r.proxies), f"{r.initial_sync_s:.2f}s", f"{r.convergence_p50_s * 1000:.0f}ms",
         f"{r.convergence_p99_s * 1000:.0f}ms", f"{r.convergence_max_s * 1000:.0f}ms",
         f"{r.proxy_ack_p99_s * 1000:.0f}ms", f"{r.pilot_cpu_percent:.0f}%", f"{r.pilot_cpu_seconds_per_round:.2f}",
         f"{r.pilot_rss_mb:.0f}", f"{r.pilot_peak_rss_mb:.0f}", str(r.config_bytes))
        for r in results
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


async def main_async(args: argparse.Namespace) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-") as temp:
        state = Path(temp)
        supervisor = Supervisor(state / "logs")
        try:
            nats_handle = start_nats(supervisor, state)
            consul_handle = start_consul(supervisor, state)
            async with aiohttp.ClientSession() as session:
                consul = Consul(session, consul_handle.addr)
                started = time.monotonic()
                await consul.many([consul.register(plain_instance(i)) for i in [-1, *range(args.services - 1)]])
                print(f"registered {args.services} services in {time.monotonic() - started:.1f}s", file=sys.stderr)
            results = []
            for proxies in args.proxies:
                print(f"measuring {proxies} proxies ...", file=sys.stderr)
                results.append(await run_scale(args, proxies, nats_handle.url, consul_handle.addr, state / "logs"))
            return results
        finally:
            supervisor.stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.controlplane", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--proxies", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--services", type=int, default=1000, help="services in the Consul catalog")
    parser.add_argument("--upstreams", type=int, default=5, help="upstreams each proxy declares (0: all)")
    parser.add_argument(
        "--resources",
        type=int,
        default=0,
        help="VirtualServices, DestinationRules and AuthorizationPolicies (each) stored besides the hot rule",
    )
    parser.add_argument("--rounds", type=int, default=20, help="config changes timed per proxy count")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between rounds")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds any one wait may take")
    parser.add_argument("--out", type=Path, default=Path("bench/results/controlplane.json"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    results = asyncio.run(main_async(args))
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
