"""TCP peer metadata exchange through two real sidecars: labels on both reporters, app bytes untouched, trust rule.

Certificates come from citadel's CA; sockets, mTLS and listeners are real. The callee runs as db v2 while the
endpoint pilot sent still says v1, so the source side can only name v2 by the exchange.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.citadel.ca import CertificateAuthority
from services.citadel.testing import DirectCaSource
from services.local.processes import free_port
from services.proxy.enroll_in_process import InProcessEnroller
from services.proxy.sidecar import Sidecar, SidecarSettings
from services.proxy.snapshot import ConfigSnapshot
from services.proxy.telemetry.setup import TelemetrySettings
from shared.model.proxy_config import ProxyConfig
from shared.peer_metadata import PeerMetadata, block_for
from tests.integration.sidecar_settings import loopback_settings, metric

TRUST_DOMAIN = "cluster.local"
CLUSTER = "outbound|5432||db"


@dataclass
class RecordingEcho:
    """Echoes every byte and keeps, per connection, exactly what it received."""

    received: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = bytearray()
        while data := await reader.read(65536):
            got += data
            writer.write(data)
            await writer.drain()
        self.received.append(bytes(got))
        writer.close()


@dataclass
class Pair:
    caller: Sidecar
    callee: Sidecar
    app: RecordingEcho
    access_log: Path


def configure(caller: Sidecar, callee: Sidecar) -> None:
    endpoint = {
        "address": "127.0.0.1",
        "port": callee.listeners["inbound"].port,
        "identity": callee.settings.spiffe_id,
        "labels": {"app": "db", "version": "v1", "namespace": "default"},
    }
    listener = {"name": "db:5432", "service": "db", "upstream": "db", "port": 5432}
    caller_raw = {
        "proxyId": caller.proxy_id,
        "service": "billing",
        "namespace": "default",
        "tcpListeners": [{**listener, "routes": [{"route": [{"cluster": CLUSTER}]}]}],
        "clusters": [{"name": CLUSTER, "host": "db", "port": 5432, "endpoints": [endpoint]}],
    }
    callee_raw = {"proxyId": callee.proxy_id, "service": "db", "namespace": "default"}
    for sidecar, raw in ((caller, caller_raw), (callee, callee_raw)):
        sidecar.state.swap(ConfigSnapshot.build(ProxyConfig.model_validate(raw).versioned(), random.Random(1)))


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    ca = CertificateAuthority.create(TRUST_DOMAIN)
    app = RecordingEcho()
    app.server = await asyncio.start_server(app.handle, "127.0.0.1", 0)
    app_port = int(app.server.sockets[0].getsockname()[1])
    access_log = tmp_path / "access.log"

    def settings(service: str, app_port: int, **extra: Any) -> SidecarSettings:
        telemetry = TelemetrySettings(prometheus_port=0, access_log_file=str(access_log), access_log_encoding="JSON")
        return loopback_settings(service, app_port, tmp_path / service, "mx", telemetry=telemetry, **extra)

    callee = Sidecar(
        settings("db", app_port=app_port, protocol="tcp", version="v2"),
        InProcessEnroller(DirectCaSource(ca)),
        bus_trust_bundle=False,
    )
    caller = Sidecar(
        settings("billing", app_port=free_port(), upstreams=("db:5432:0",)),
        InProcessEnroller(DirectCaSource(ca)),
        bus_trust_bundle=False,
    )
    async with asyncio.timeout(30):
        await callee.start()
        await caller.start()
    configure(caller, callee)
    yield Pair(caller, callee, app, access_log)
    await caller.stop()
    await callee.stop()
    app.server.close()


async def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


async def round_trip(pair: Pair, payload: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", pair.caller.tcp_outbound.ports["db:5432"])
    writer.write(payload)
    writer.write_eof()
    async with asyncio.timeout(20):
        assert await reader.read() == payload
    writer.close()
    await eventually(lambda: len(pair.app.received) == 1, 10, "the app to see the end of the stream")
    assert pair.app.received == [payload], "the app received bytes other than the client's"


def closed_with(sidecar: Sidecar, **labels: str) -> Callable[[], bool]:
    return lambda: metric(sidecar, "istio_tcp_connections_closed_total", **labels) == 1


async def test_both_reporters_name_the_peer_workload(pair: Pair) -> None:
    payload = bytes(range(256)) * 40
    await round_trip(pair, payload)
    destination = {
        "reporter": "destination",
        "source_workload": "billing-v1",
        "source_workload_namespace": "default",
        "source_principal": pair.caller.settings.spiffe_id,
        "source_app": "billing",
        "source_version": "v1",
        "destination_workload": "db-v2",
    }
    source = {
        "reporter": "source",
        "source_workload": "billing-v1",
        "destination_workload": "db-v2",
        "destination_app": "db",
        "destination_version": "v2",
        "destination_principal": pair.callee.settings.spiffe_id,
    }
    await eventually(closed_with(pair.callee, **destination), 10, "destination-side labels naming the caller")
    await eventually(closed_with(pair.caller, **source), 10, "source-side labels naming the callee")
    assert metric(pair.callee, "istio_tcp_received_bytes_total", **destination) == len(payload)
    assert metric(pair.caller, "istio_tcp_sent_bytes_total", **source) == len(payload)
    await eventually(lambda: '"downstream_peer"' in pair.access_log.read_text(), 10, "the access-log line")
    assert '"workload":"billing-v1"' in pair.access_log.read_text().replace(" ", "")


async def test_a_block_disagreeing_with_the_certificate_is_ignored(pair: Pair) -> None:
    forged = PeerMetadata("payments", "admin-v9", "billing", "admin", "v9")
    pair.caller.tcp_outbound._own_block = block_for(forged)
    await round_trip(pair, b"forged metadata never reaches the app")
    believed = {
        "reporter": "destination",
        "source_workload": "unknown",
        "source_workload_namespace": "default",
        "source_app": "unknown",
        "source_principal": pair.caller.settings.spiffe_id,
    }
    await eventually(closed_with(pair.callee, **believed), 10, "the certificate's labels, not the forged ones")
    assert metric(pair.callee, "istio_tcp_connections_opened_total", source_workload="admin-v9") == 0


async def test_a_caller_without_the_alpn_gets_plain_pass_through(pair: Pair) -> None:
    pair.caller.tls.tcp_client = pair.caller.tls.client  # type: ignore[method-assign]  # an older sidecar
    await round_trip(pair, b"old sidecar bytes")
    unknown_caller = {"reporter": "destination", "source_workload": "unknown", "source_workload_namespace": "default"}
    await eventually(closed_with(pair.callee, **unknown_caller), 10, "certificate-only labels")
    await eventually(closed_with(pair.caller, reporter="source", destination_version="v1"), 10, "endpoint labels")
