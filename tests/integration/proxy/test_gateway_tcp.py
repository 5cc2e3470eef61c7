"""A gateway's TCP and TLS PASSTHROUGH servers through real proxies: connections routed by port and by the
client's SNI, relayed as bytes over mTLS to TCP services' sidecars, TLS terminated by the app itself."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from services.local.processes import free_port
from services.pilot.snapshot import Snapshot
from services.pilot.testing import resources
from services.proxy.sidecar import Sidecar
from tests.integration.proxy.conftest import ProxyBus
from tests.integration.proxy.test_outbound_transport import instance, push_generated
from tests.origination_pki import PkiFiles, write_pki

pytestmark = pytest.mark.integration

SECURE = "secure.example.test"
Server = Callable[[ssl.SSLContext | None, str], Awaitable[int]]


@pytest.fixture
async def echo_server() -> AsyncIterator[Server]:
    """Starts echo apps: each answers every line with `<name>: <line>`, over TLS when given a context."""
    servers: list[asyncio.Server] = []

    async def start(context: ssl.SSLContext | None, name: str) -> int:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                writer.write(f"{name}: ".encode() + line)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=context)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def edge_config(tls_port: int, tcp_port: int) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {tls_port}, name: tls, protocol: TLS}}
    hosts: ["*.example.test"]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: {tcp_port}, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge}}
spec:
  hosts: [{SECURE}, db.internal]
  gateways: [edge]
  tls:
  - match: [{{sniHosts: [{SECURE}]}}]
    route: [{{destination: {{host: secure}}}}]
  tcp:
  - route: [{{destination: {{host: db}}}}]
"""


async def exchange(port: int, line: bytes, context: ssl.SSLContext | None = None, sni: str | None = None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=sni)
    try:
        writer.write(line)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.readline()
    finally:
        writer.close()


async def serving(gateway: Sidecar, port: int) -> bool:
    assert gateway.gateway is not None
    return port in gateway.gateway.served


async def test_tls_passthrough_by_sni_and_tcp_by_port_reach_tcp_services_over_mtls(
    make_sidecar: Any, bus: ProxyBus, echo_server: Server, tmp_path: Path
) -> None:
    pki: PkiFiles = write_pki(tmp_path / "pki", server_names=(SECURE,))
    secure_app = await echo_server(pki.server_context(), "secure")
    db_app = await echo_server(None, "db")
    secure = await make_sidecar("secure", secure_app, protocol="tcp")
    db = await make_sidecar("db", db_app, protocol="tcp")
    gateway = await make_sidecar("ingressgateway", 0, gateway=True)
    tls_port, tcp_port = free_port(), free_port()
    catalog = [instance(secure), instance(db), instance(gateway)]
    snap = Snapshot.build(resources(edge_config(tls_port, tcp_port)), catalog)
    await push_generated(bus, snap, secure, db, gateway)
    await bus.eventually(lambda: serving(gateway, tls_port), 10.0, "the TLS server listening")
    await bus.eventually(lambda: serving(gateway, tcp_port), 10.0, "the TCP server listening")

    client = ssl.create_default_context(cafile=str(pki.ca))  # trusts the app's own CA, not the mesh's
    assert await exchange(tls_port, b"over tls\n", client, SECURE) == b"secure: over tls\n"
    assert await exchange(tcp_port, b"over tcp\n") == b"db: over tcp\n"

    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await exchange(tls_port, b"nobody\n", client, "other.example.test")  # no route covers this SNI: closed


async def test_authorization_policies_apply_to_the_gateways_connections(
    make_sidecar: Any, bus: ProxyBus, echo_server: Server, tmp_path: Path
) -> None:
    """An ALLOW policy on the gateway naming one SNI lets only that TLS name in; on TCP servers a rule with an
    HTTP-only field never allows (as on a sidecar's TCP port), so the TCP server is closed to everyone."""
    pki: PkiFiles = write_pki(tmp_path / "pki", server_names=(SECURE, "blocked.example.test"))
    secure_app = await echo_server(pki.server_context(), "secure")
    db_app = await echo_server(None, "db")
    secure = await make_sidecar("secure", secure_app, protocol="tcp")
    db = await make_sidecar("db", db_app, protocol="tcp")
    gateway = await make_sidecar("ingressgateway", 0, gateway=True)
    tls_port, tcp_port = free_port(), free_port()
    policy = f"""
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: edge-sni}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: ALLOW
  rules:
  - when: [{{key: connection.sni, values: [{SECURE}]}}]
  - to: [{{operation: {{paths: ["/*"], ports: ["{tcp_port}"]}}}}]
"""
    config = edge_config(tls_port, tcp_port).replace(f"sniHosts: [{SECURE}]", '"sniHosts": ["*.example.test"]')
    catalog = [instance(secure), instance(db), instance(gateway)]
    await push_generated(bus, Snapshot.build(resources(config + policy), catalog), secure, db, gateway)
    await bus.eventually(lambda: serving(gateway, tls_port), 10.0, "the TLS server listening")
    await bus.eventually(lambda: serving(gateway, tcp_port), 10.0, "the TCP server listening")
    assert gateway.gateway is not None
    client = ssl.create_default_context(cafile=str(pki.ca))
    assert await exchange(tls_port, b"allowed\n", client, SECURE) == b"secure: allowed\n"
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await exchange(tls_port, b"denied\n", client, "blocked.example.test")
    try:
        answer = await exchange(tcp_port, b"denied\n")
    except ConnectionError:  # closed with our line unread: a reset
        answer = b""
    assert answer == b""  # closed before a byte is relayed
    assert gateway.gateway.stats.rbac_denied == 2


async def test_a_tls_server_that_terminates_routes_the_decrypted_bytes_by_tcp_route(
    make_sidecar: Any, bus: ProxyBus, echo_server: Server, tmp_path: Path
) -> None:
    pki: PkiFiles = write_pki(tmp_path / "pki", server_names=("db.example.test",))
    db_app = await echo_server(None, "db")
    db = await make_sidecar("db", db_app, protocol="tcp")
    gateway = await make_sidecar("ingressgateway", 0, gateway=True)
    tls_port = free_port()
    config = f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {tls_port}, name: tls, protocol: TLS}}
    hosts: ["*"]
    tls: {{mode: SIMPLE, serverCertificate: {pki.server_cert}, privateKey: {pki.server_key}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge}}
spec:
  hosts: ["*"]
  gateways: [edge]
  tcp: [{{route: [{{destination: {{host: db}}}}]}}]
"""
    catalog = [instance(db), instance(gateway)]
    await push_generated(bus, Snapshot.build(resources(config), catalog), db, gateway)
    await bus.eventually(lambda: serving(gateway, tls_port), 10.0, "the TLS server listening")
    client = ssl.create_default_context(cafile=str(pki.ca))  # the gateway's certificate, from its files
    assert await exchange(tls_port, b"decrypted\n", client, "db.example.test") == b"db: decrypted\n"
