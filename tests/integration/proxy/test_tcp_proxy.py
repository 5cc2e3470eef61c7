"""TCP pass-through through two real sidecars: a caller's local upstream port -> mTLS -> callee -> TCP app.

Certificates come from citadel's CA; sockets, TLS and listeners are real. Config is applied to each
sidecar's state directly (pilot's part is covered by the simulation tests).
"""

from __future__ import annotations

import asyncio
import random
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from proxyprotocol.v1 import ProxyProtocolV1
from proxyprotocol.v2 import ProxyProtocolV2

from services.citadel.ca import CertificateAuthority
from services.citadel.testing import DirectCaSource
from services.local.processes import free_port
from services.proxy.enroll_in_process import InProcessEnroller
from services.proxy.sidecar import Sidecar, SidecarSettings
from services.proxy.snapshot import ConfigSnapshot
from services.proxy.telemetry.setup import TelemetrySettings
from shared.model.proxy_config import ProxyConfig
from tests.integration.sidecar_settings import loopback_settings, metric

TRUST_DOMAIN = "cluster.local"
CLUSTER = "outbound|5432||db"
MB = 1024 * 1024


@dataclass
class TcpApp:
    """Echoes every byte; at the caller's end of stream writes `bye <total>` and closes."""

    connections: int = 0
    totals: list[int] = field(default_factory=list)
    server: asyncio.Server | None = None
    echo: bool = True

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        total = 0
        while data := await reader.read(65536):
            total += len(data)
            if self.echo:
                writer.write(data)
                await writer.drain()
        self.totals.append(total)
        writer.write(f"bye {total}".encode())
        await writer.drain()
        writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@dataclass
class Mesh:
    caller: Sidecar
    callee: Sidecar
    app: TcpApp
    access_log: Path

    @property
    def local_port(self) -> int:
        return self.caller.tcp_outbound.ports["db:5432"]

    def configure(self, inbound: dict[str, Any] | None = None) -> None:
        caller = {
            "proxyId": self.caller.proxy_id,
            "service": "billing",
            "namespace": "default",
            "tcpListeners": [
                {
                    "name": "db:5432",
                    "service": "db",
                    "upstream": "db",
                    "port": 5432,
                    "routes": [{"route": [{"cluster": CLUSTER}]}],
                }
            ],
            "clusters": [
                {
                    "name": CLUSTER,
                    "host": "db",
                    "port": 5432,
                    "endpoints": [
                        {
                            "address": "127.0.0.1",
                            "port": self.callee.listeners["inbound"].port,
                            "identity": self.callee.settings.spiffe_id,
                            "labels": {"app": "db", "version": "v1", "namespace": "default"},
                        }
                    ],
                }
            ],
        }
        callee = {"proxyId": self.callee.proxy_id, "service": "db", "namespace": "default", "inbound": inbound or {}}
        for sidecar, raw in ((self.caller, caller), (self.callee, callee)):
            config = ProxyConfig.model_validate(raw).versioned()
            sidecar.state.swap(ConfigSnapshot.build(config, random.Random(1)))

    def with_caller_policy(self, policy: dict[str, Any]) -> None:
        """The caller's config as it is, with `policy` as its cluster's trafficPolicy."""
        snapshot = self.caller.state.snapshot
        assert snapshot is not None
        raw = snapshot.config.model_dump(by_alias=True)
        raw["clusters"][0]["trafficPolicy"] = policy
        self.caller.state.swap(ConfigSnapshot.build(ProxyConfig.model_validate(raw).versioned(), random.Random(1)))


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    ca = CertificateAuthority.create(TRUST_DOMAIN)
    app = TcpApp()
    app.server = await asyncio.start_server(app.handle, "127.0.0.1", 0)
    access_log = tmp_path / "access.log"

    def settings(service: str, app_port: int, **extra: Any) -> SidecarSettings:
        telemetry = TelemetrySettings(prometheus_port=0, access_log_file=str(access_log))
        return loopback_settings(service, app_port, tmp_path / service, "tcp", telemetry=telemetry, **extra)

    callee = Sidecar(
        settings("db", app_port=app.port, protocol="tcp"), InProcessEnroller(DirectCaSource(ca)), bus_trust_bundle=False
    )
    caller = Sidecar(
        settings("billing", app_port=free_port(), upstreams=("db:5432:0",)),
        InProcessEnroller(DirectCaSource(ca)),
        bus_trust_bundle=False,
    )
    async with asyncio.timeout(30):
        await callee.start()
        await caller.start()
    built = Mesh(caller, callee, app, access_log)
    built.configure()
    yield built
    await caller.stop()
    await callee.stop()
    app.server.close()


async def eventually(check: Callable[[], bool | Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


async def read_all(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(20):
        return await reader.read()


async def test_bytes_round_trip_over_mtls_with_half_close(mesh: Mesh) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", mesh.local_port)
    writer.write(b"hello over tcp")
    await writer.drain()
    async with asyncio.timeout(10):
        assert await reader.readexactly(14) == b"hello over tcp"
    writer.write_eof()  # half-close: the answer still comes back after our end of stream
    assert await read_all(reader) == b"bye 14"
    writer.close()
    assert mesh.app.totals == [14]


async def test_tcp_metrics_on_both_reporters(mesh: Mesh) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", mesh.local_port)
    writer.write(b"x" * 1000)
    writer.write_eof()
    assert await read_all(reader) == b"x" * 1000 + b"bye 1000"
    writer.close()
    caller_id, callee_id = mesh.caller.settings.spiffe_id, mesh.callee.settings.spiffe_id
    source = {
        "reporter": "source",
        "source_workload": "billing-v1",
        "source_principal": caller_id,
        "destination_workload": "db-v1",
        "destination_principal": callee_id,
        "destination_service": "db",
        "request_protocol": "tcp",
        "response_flags": "-",
    }
    destination = {
        "reporter": "destination",
        "source_principal": caller_id,
        "source_workload_namespace": "default",
        "destination_principal": callee_id,
        "destination_app": "db",
        "connection_security_policy": "mutual_tls",
        "response_flags": "-",
    }
    for sidecar, labels in ((mesh.caller, source), (mesh.callee, destination)):

        def closed(s: Sidecar = sidecar, lb: dict[str, str] = labels) -> bool:
            return metric(s, "istio_tcp_connections_closed_total", **lb) == 1

        await eventually(closed, 10, "the connection counted as closed")
        assert metric(sidecar, "istio_tcp_connections_opened_total", **labels) == 1
        assert metric(sidecar, "istio_tcp_received_bytes_total", **labels) == 1000
        assert metric(sidecar, "istio_tcp_sent_bytes_total", **labels) == 1008
    await eventually(lambda: mesh.access_log.exists() and '"- - -" 0 -' in mesh.access_log.read_text(), 10, "log")
    lines = [line for line in mesh.access_log.read_text().splitlines() if '"- - -"' in line]
    assert any(" 1000 1008 " in line and CLUSTER in line for line in lines), lines


async def test_large_transfer_in_bounded_memory(mesh: Mesh) -> None:
    mesh.app.echo = False
    size, chunk = 50 * MB, b"\x5a" * 65536
    tracemalloc.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", mesh.local_port)
        for _ in range(size // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        assert await read_all(reader) == f"bye {size}".encode()
        writer.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MB, f"peak Python allocations {peak / MB:.1f} MB while relaying {size // MB} MB"


async def test_the_callee_authorizes_the_callers_identity(mesh: Mesh) -> None:
    caller_principal = mesh.caller.settings.spiffe_id.removeprefix("spiffe://")
    allow = {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": [caller_principal]}}]}]}
    mesh.configure({"authorization": [{"name": "callers", "namespace": "default", "spec": allow}]})
    reader, writer = await asyncio.open_connection("127.0.0.1", mesh.local_port)
    writer.write(b"ok")
    writer.write_eof()
    assert await read_all(reader) == b"okbye 2"
    writer.close()


@pytest.mark.parametrize(
    "spec",
    [
        {"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["default"]}}]}]},
        {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/x/sa/y"]}}]}]},
        # An ALLOW rule with an HTTP-only field never matches TCP traffic (Istio): nothing is allowed.
        {"action": "ALLOW", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]},
    ],
    ids=["deny", "allow-other", "allow-http-only"],
)
async def test_a_denial_closes_the_connection(mesh: Mesh, spec: dict[str, Any]) -> None:
    mesh.configure({"authorization": [{"name": "p", "namespace": "default", "spec": spec}]})
    before = metric(mesh.callee, "istio_tcp_connections_closed_total", response_flags="RBAC")
    reader, writer = await asyncio.open_connection("127.0.0.1", mesh.local_port)
    writer.write(b"secret")
    with pytest.raises((ConnectionError, AssertionError)):
        assert await read_all(reader) != b""
    writer.close()
    assert mesh.app.connections == 0
    assert metric(mesh.callee, "istio_tcp_connections_closed_total", response_flags="RBAC") == before + 1


async def test_strict_refuses_plain_text_on_a_tcp_port(mesh: Mesh) -> None:
    mesh.configure({"mtlsMode": "STRICT"})
    reader, writer = await asyncio.open_connection("127.0.0.1", mesh.callee.listeners["inbound"].port)
    writer.write(b"plain bytes")
    with pytest.raises((ConnectionError, AssertionError)):
        assert await read_all(reader) != b""
    writer.close()
    assert mesh.app.connections == 0
    mesh.configure({"mtlsMode": "PERMISSIVE"})
    reader, writer = await asyncio.open_connection("127.0.0.1", mesh.callee.listeners["inbound"].port)
    writer.write(b"plain bytes")
    writer.write_eof()
    assert await read_all(reader) == b"plain bytesbye 11"
    writer.close()


async def test_max_connections_overflow_closes_at_once(mesh: Mesh) -> None:
    mesh.configure()
    mesh.with_caller_policy({"connectionPool": {"tcp": {"maxConnections": 1}}})
    first_reader, first = await asyncio.open_connection("127.0.0.1", mesh.local_port)
    first.write(b"a")
    async with asyncio.timeout(10):
        assert await first_reader.readexactly(1) == b"a"
    reader, writer = await asyncio.open_connection("127.0.0.1", mesh.local_port)
    assert await read_all(reader) == b""
    writer.close()
    first.write_eof()
    assert await read_all(first_reader) == b"bye 1"
    first.close()
    assert metric(mesh.caller, "istio_tcp_connections_closed_total", response_flags="UO") == 1


def _keepalive_timers(remote_port: int) -> list[tuple[int, int]]:
    """(timer kind, clock ticks left) of this machine's established IPv4 connections to `remote_port` on
    loopback, from /proc/net/tcp (kind 2: the keepalive timer runs)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, timer = fields[2], fields[3], fields[5]
        if state == "01" and remote == f"0100007F:{remote_port:04X}":
            kind, left = timer.split(":")
            found.append((int(kind, 16), int(left, 16)))
    return found


async def test_tcp_keepalive_is_set_on_the_upstream_connection(mesh: Mesh) -> None:
    mesh.with_caller_policy({"connectionPool": {"tcp": {"tcpKeepalive": {"time": "20s", "probes": 3}}}})
    reader, writer = await asyncio.open_connection("127.0.0.1", mesh.local_port)
    writer.write(b"a")
    async with asyncio.timeout(10):
        assert await reader.readexactly(1) == b"a"
    timers = _keepalive_timers(mesh.callee.listeners["inbound"].port)
    assert len(timers) == 1 and timers[0][0] == 2 and 0 < timers[0][1] <= 20 * 100, timers
    writer.write_eof()
    assert await read_all(reader) == b"bye 1"
    writer.close()


async def test_an_idle_connection_is_closed_after_the_idle_timeout(mesh: Mesh) -> None:
    mesh.with_caller_policy({"connectionPool": {"tcp": {"idleTimeout": "0.3s"}}})
    reader, writer = await asyncio.open_connection("127.0.0.1", mesh.local_port)
    writer.write(b"a")
    async with asyncio.timeout(10):
        assert await reader.readexactly(1) == b"a"
        assert await reader.read() == b""  # then nothing moves: the caller's sidecar closes the connection
    writer.close()


async def test_the_sidecar_ingress_pool_closes_connections_beyond_max_connections(mesh: Mesh) -> None:
    mesh.configure(inbound={"appPorts": [{"port": mesh.app.port, "connectionPool": {"tcp": {"maxConnections": 1}}}]})
    inbound = mesh.callee._tcp_inbound
    assert inbound is not None
    first_reader, first_writer = await asyncio.open_connection("127.0.0.1", mesh.local_port)
    first_writer.write(b"a")
    async with asyncio.timeout(10):
        assert await first_reader.readexactly(1) == b"a"
    reader, writer = await asyncio.open_connection("127.0.0.1", mesh.local_port)
    writer.write(b"b")
    assert await read_all(reader) == b""  # closed at once: the app never sees it
    writer.close()
    assert inbound.stats.app_overflow == 1 and mesh.app.connections == 1
    first_writer.write_eof()
    assert await read_all(first_reader) == b"bye 1"
    first_writer.close()
    await eventually(lambda: inbound.app_connections == 0, 10, "the first connection to end")
    reader, writer = await asyncio.open_connection("127.0.0.1", mesh.local_port)
    writer.write(b"c")
    writer.write_eof()
    assert await read_all(reader) == b"cbye 1"
    writer.close()


async def test_a_default_endpoint_sends_the_connections_to_another_port(mesh: Mesh) -> None:
    other = TcpApp(echo=False)
    other.server = await asyncio.start_server(other.handle, "127.0.0.1", 0)
    try:
        mesh.configure(inbound={"appPorts": [{"port": mesh.app.port, "defaultEndpoint": f"127.0.0.1:{other.port}"}]})
        reader, writer = await asyncio.open_connection("127.0.0.1", mesh.local_port)
        writer.write(b"to the other")
        writer.write_eof()
        assert await read_all(reader) == b"bye 12"
        writer.close()
        assert (other.connections, mesh.app.connections) == (1, 0)
    finally:
        other.server.close()


@pytest.mark.parametrize("version", ["V1", "V2"])
async def test_proxy_protocol_names_the_caller_to_an_endpoint_outside_the_mesh(mesh: Mesh, version: str) -> None:
    """trafficPolicy.proxyProtocol: the connection to a plain endpoint starts with a PROXY header whose source
    is the caller's end of its connection to the sidecar; the bytes after it are the caller's."""
    received: list[bytes] = []

    async def outside(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read())
        writer.close()

    server = await asyncio.start_server(outside, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        snapshot = mesh.caller.state.snapshot
        assert snapshot is not None
        raw = snapshot.config.model_dump(by_alias=True)
        raw["clusters"][0]["endpoints"] = [{"address": "127.0.0.1", "port": port}]
        raw["clusters"][0]["trafficPolicy"] = {"proxyProtocol": {"version": version}}
        config = ProxyConfig.model_validate(raw).versioned()
        mesh.caller.state.swap(ConfigSnapshot.build(config, random.Random(1)))
        reader, writer = await asyncio.open_connection("127.0.0.1", mesh.local_port)
        caller_port = writer.get_extra_info("sockname")[1]
        writer.write(b"hello")
        writer.write_eof()
        assert await read_all(reader) == b""
        writer.close()
        await eventually(lambda: bool(received), 10, "the outside server's bytes")
    finally:
        server.close()
    parser = ProxyProtocolV1() if version == "V1" else ProxyProtocolV2()
    header_length = received[0].index(b"\r\n") + 2 if version == "V1" else 16 + received[0][15]
    result = parser.unpack(received[0][:header_length])
    assert result.proxied and result.source == (IPv4Address("127.0.0.1"), caller_port)
    assert result.dest == (IPv4Address("127.0.0.1"), mesh.local_port)
    assert received[0][header_length:] == b"hello"
