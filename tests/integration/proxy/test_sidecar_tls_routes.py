"""VirtualService `tls` routes through a real sidecar: the app opens TLS to a declared TCP upstream, the sidecar
reads the SNI of its ClientHello, picks the route, and relays every byte (the ClientHello included) to a TLS
server outside the mesh, which terminates TLS itself; the app verifies that server's own certificate."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.citadel.ca import CertificateAuthority
from services.citadel.testing import DirectCaSource
from services.proxy.enroll_in_process import InProcessEnroller
from services.proxy.sidecar import Sidecar
from services.proxy.snapshot import ConfigSnapshot
from shared.model.proxy_config import ProxyConfig
from tests.integration.sidecar_settings import loopback_settings
from tests.origination_pki import PkiFiles, write_pki

pytestmark = pytest.mark.integration

NAMES = ("api.example.test", "eu.api.example.test")


async def tls_server(pki: PkiFiles, answer: bytes) -> asyncio.Server:
    context = pki.server_context()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(answer)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)


def listener_config(sidecar: Sidecar, ports: dict[str, int]) -> ProxyConfig:
    def cluster(name: str, port: int) -> dict[str, object]:
        return {
            "name": name,
            "host": "api.example.test",
            "port": 443,
            "endpoints": [{"address": "127.0.0.1", "port": port}],
        }

    return ProxyConfig.model_validate(
        {
            "proxyId": sidecar.proxy_id,
            "service": "billing",
            "namespace": "default",
            "tcpListeners": [
                {
                    "name": "api.example.test:443",
                    "service": "api.example.test",
                    "upstream": "api.example.test",
                    "port": 443,
                    "routes": [{"route": [{"cluster": "default"}]}],
                    "sniRoutes": [{"sniHosts": ["eu.api.example.test"], "route": [{"cluster": "eu"}]}],
                }
            ],
            "clusters": [cluster("default", ports["default"]), cluster("eu", ports["eu"])],
        }
    ).versioned()


@pytest.fixture
async def caller(tmp_path: Path) -> AsyncIterator[Sidecar]:
    ca = CertificateAuthority.create("cluster.local")
    settings = loopback_settings("billing", 1, tmp_path / "billing", "tls", upstreams=("api.example.test:443:0",))
    sidecar = Sidecar(settings, InProcessEnroller(DirectCaSource(ca)), bus_trust_bundle=False)
    async with asyncio.timeout(30):
        await sidecar.start()
    yield sidecar
    await sidecar.stop()


async def call(port: int, name: str, pki: PkiFiles) -> bytes:
    context = ssl.create_default_context(cafile=str(pki.ca))
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=name)
        writer.write(b"hello")
        answer = await reader.read()
    writer.close()
    return answer


async def test_the_client_hello_sni_picks_the_tls_route_and_tls_stays_end_to_end(
    caller: Sidecar, tmp_path: Path
) -> None:
    pki = write_pki(tmp_path / "pki", server_names=NAMES)
    default, eu = await tls_server(pki, b"default pool"), await tls_server(pki, b"eu pool")
    try:
        ports = {"default": default.sockets[0].getsockname()[1], "eu": eu.sockets[0].getsockname()[1]}
        caller.state.swap(ConfigSnapshot.build(listener_config(caller, ports), random.Random(1)))
        local = caller.tcp_outbound.ports["api.example.test:443"] if caller.tcp_outbound else 0
        assert await call(local, "eu.api.example.test", pki) == b"eu pool"  # the TLS route
        assert await call(local, "api.example.test", pki) == b"default pool"  # no TLS route covers it: tcp routes
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(b"not TLS at all\r\n")  # a listener with TLS routes wants a ClientHello first
        async with asyncio.timeout(10):
            assert await reader.read() == b""
        writer.close()
    finally:
        default.close()
        eu.close()
