"""Per-request cost of the sidecar's own code: its listeners driven in one process, sockets replaced by fakes.

`python -m bench.pathcost` builds a real Sidecar (the data-plane benchmark's: metrics on, access log and
tracing off), then feeds its outbound listener (plain HTTP to one endpoint) and its inbound listener (an mTLS
caller's request to the app) one whole request at a time, and the upstream connection the response, in the
same call. What is measured is only the proxy's own work on the immediate path: parsing, routing, the
endpoint pick, headers, telemetry and the response write, without the kernel, the event loop's polling or a
load generator sharing the cores. It answers "did this change make the common request cheaper", which the
socket benchmark (`bench.dataplane`) can only answer in pairs of noisy runs.

Two measures:
- CPU microseconds per request (`time.process_time` over `--requests`, median and min of `--rounds`); still
  subject to the machine's speed at the time, but with no I/O in it;
- with `--instructions`: instructions per request counted by valgrind (`cachegrind`), the difference between a
  run with `--requests` requests and one with none: within about 0.5 % between runs of the same code, so
  two commits compare closely (installed with apt-get when missing and running as root).

The mTLS caller is faked at the transport: its certificate is never verified (the handshake is not part of
the path measured), only its SPIFFE ID is read, as the inbound listener reads it from a real connection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench.dataplane import PLAIN, client_config
from bench.reverse_proxies import ensure_installed
from bench.sidecar_process import NAMESPACE, TRUST_DOMAIN, CaDirEnroller, settings_for
from bench.upstream import RESPONSE
from services.citadel.ca import CertificateAuthority
from services.proxy.h1client import _Connection
from services.proxy.sidecar import Sidecar
from services.proxy.snapshot import ConfigSnapshot
from shared.model.proxy_config import ProxyConfig

PATHS = ("outbound", "inbound")
CALLER = f"spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/bench-client"
_CALLER_DER = bytes(range(256)) * 3
"""Stands for the caller's certificate: what a real SSL object hands out (a new bytes object per call)."""
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


class FakeSslObject:
    """The caller's side of an mTLS connection as the inbound listener reads it."""

    def getpeercert(self, binary_form: bool = False) -> Any:
        if binary_form:
            return bytes(bytearray(_CALLER_DER))
        return {"subjectAltName": (("URI", CALLER),)}


class FakeTransport:
    """A connected socket's transport that keeps what is written and never closes on its own."""

    def __init__(self, ssl_object: FakeSslObject | None = None) -> None:
        self.written: list[bytes] = []
        self._ssl_object = ssl_object
        self._closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {
            "peername": ("127.0.0.1", 40000),
            "sockname": ("127.0.0.1", 15006),
            "ssl_object": self._ssl_object,
        }.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self._closing = True

    abort = close


@dataclass
class Driver:
    """One listener connection and one kept upstream connection: `one()` runs a whole request through both."""

    request: bytes
    downstream: Any
    downstream_transport: FakeTransport
    upstream: _Connection

    def one(self) -> None:
        self.downstream.data_received(self.request)
        self.upstream.data_received(RESPONSE)

    def answered(self) -> list[bytes]:
        return self.downstream_transport.written


def _upstream_connection(loop: asyncio.AbstractEventLoop) -> _Connection:
    connection = _Connection(loop)
    connection.connection_made(FakeTransport())  # type: ignore[arg-type]
    return connection


@asynccontextmanager
async def sidecar(service: str, app_port: int, config_of: Callable[[str], ProxyConfig]) -> AsyncIterator[Sidecar]:
    """A started Sidecar with `config_of(proxy_id)` applied (no NATS, no Consul), stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="isthmus-pathcost-") as tmp:
        ca_dir = Path(tmp) / "ca"
        CertificateAuthority.load_or_create(ca_dir, TRUST_DOMAIN)
        running = Sidecar(settings_for(service, app_port, Path(tmp)), CaDirEnroller(ca_dir), bus_trust_bundle=False)
        await running.start()
        try:
            config = config_of(running.proxy_id).model_copy(update={"proxy_id": running.proxy_id})
            running.state.swap(ConfigSnapshot.build(config.versioned(), random.Random(1)))
            yield running
        finally:
            await running.stop()


def outbound_driver(running: Sidecar) -> Driver:
    """The app's plain request to `plain-upstream` through the outbound listener, the endpoint's connection kept."""
    listener = running.listeners["outbound"]
    assert listener.front is not None, "the outbound listener has the pass-through front"
    transport = FakeTransport()
    protocol = listener.front.protocol()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    request = f"GET / HTTP/1.1\r\nHost: {PLAIN}\r\nUser-Agent: isthmus-bench\r\n\r\n".encode()
    snapshot = running.state.snapshot
    assert snapshot is not None, "the config is applied"
    cluster = snapshot.routes.clusters[f"outbound|80||{PLAIN}"]
    assert running._outbound is not None, "a started sidecar has its outbound handler"
    runtime = running._outbound.clusters.get(cluster)
    pool = running._pools.lean_for(cluster.endpoints[0], runtime.pool)
    assert pool is not None, "the cluster's pool sets no connection limits: the lean client serves it"
    upstream = _upstream_connection(asyncio.get_running_loop())
    pool.put_back(upstream)
    return Driver(request, protocol, transport, upstream)


def inbound_driver(running: Sidecar) -> Driver:
    """A meshed caller's request (its peer metadata and attempt header) through the inbound listener to the app."""
    listener = running.listeners["inbound"]
    assert listener.front is not None, "the inbound listener has the pass-through front"
    transport = FakeTransport(FakeSslObject())
    protocol = listener.front.protocol()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    upstream = _upstream_connection(asyncio.get_running_loop())
    running._inbound._side.pool.put_back(upstream)
    metadata = "".join(f"{name}: {value}\r\n" for name, value in running.telemetry._own_headers)
    request = (
        "GET / HTTP/1.1\r\nHost: bench-server\r\nUser-Agent: isthmus-bench\r\n"
        f"x-request-id: 0f0e0d0c-0b0a-4908-8706-050403020100\r\nx-envoy-attempt-count: 1\r\n{metadata}\r\n"
    ).encode()
    return Driver(request, protocol, transport, upstream)


@asynccontextmanager
async def driver_for(path: str) -> AsyncIterator[Driver]:
    if path == "outbound":
        async with sidecar("bench-client", 1, lambda proxy_id: client_config(1, CALLER, 9)) as running:
            yield outbound_driver(running)
    else:
        empty = lambda proxy_id: ProxyConfig(proxy_id=proxy_id, service="bench-server", namespace=NAMESPACE)  # noqa: E731
        async with sidecar("bench-server", 9, empty) as running:
            yield inbound_driver(running)


def _run(driver: Driver, requests: int) -> float:
    """CPU seconds for `requests` requests; checks every one was answered 200."""
    driver.answered().clear()
    started = time.process_time()
    for _ in range(requests):
        driver.one()
    spent = time.process_time() - started
    answers = driver.answered()
    assert len(answers) == requests, f"{len(answers)} answers to {requests} requests"
    assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers), answers[-1][:200]
    return spent


async def measure(path: str, requests: int, rounds: int, warmup: int) -> list[float]:
    """CPU microseconds per request, one number per round, after `warmup` unrecorded requests."""
    async with driver_for(path) as driver:
        _run(driver, warmup)
        spent = []
        for _ in range(rounds):
            spent.append(_run(driver, requests) / requests * 1e6 if requests else 0.0)
            await asyncio.sleep(0)  # what the loop has scheduled (timers, pool sweeps) runs between rounds
        return spent


def _instructions(path: str, requests: int) -> int:
    """Instructions valgrind counts for a whole child run with `requests` requests (and the fixed warm-up)."""
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    command += [sys.executable, "-m", "bench.pathcost", "--child", path, "--requests", str(requests)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600, check=True)
    found = _REFS.search(result.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{result.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def instructions_per_request(path: str, requests: int) -> int:
    return (_instructions(path, requests) - _instructions(path, 0)) // requests


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pathcost", description=__doc__.split("\n")[0])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2_000, help="unrecorded requests first")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions per request under valgrind (about a minute per path with 2,000 requests)",
    )
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def report(args: argparse.Namespace) -> Iterator[str]:
    for path in args.paths:
        spent = uvloop.run(measure(path, args.requests, args.rounds, args.warmup))
        median, least = statistics.median(spent), min(spent)
        line = f"{path:>8}: {median:6.1f} us CPU per request (median of {args.rounds}, min {least:.1f})"
        if args.instructions:
            line += f", {instructions_per_request(path, min(args.requests, 2_000)):,} instructions per request"
        yield line


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:  # one run under valgrind: only the count of what it executed matters
        uvloop.run(measure(args.child, args.requests, 1, 200))
        return 0
    if args.instructions and not ensure_installed(["valgrind"]):
        return 1
    for line in report(args):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
