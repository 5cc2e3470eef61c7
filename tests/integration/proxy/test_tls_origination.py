"""DestinationRule tls SIMPLE / MUTUAL through a real sidecar: plain HTTP in, TLS to a real HTTPS upstream.

The upstream is an aiohttp server whose certificate (SAN DNS:api.example.test) comes from a test CA written
to tmp_path; the app talks plain HTTP to the sidecar's outbound listener with `Host: api.example.test`.
Small bodies take the lean client, a body over 64 KiB streams through aiohttp's client session; both
originate TLS. TCP pass-through to such a cluster originates TLS as well. Certificate files rewritten on
disk are picked up after the check interval (shortened here) without a new config version.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.local.processes import free_port
from services.proxy import origination
from services.proxy.enroll_in_process import InProcessEnroller
from services.proxy.sidecar import Sidecar
from services.proxy.snapshot import ConfigSnapshot
from shared.model.proxy_config import ProxyConfig, cluster_name
from tests.integration.proxy.catalog_config import apply
from tests.integration.proxy.conftest import CASource, ProxyBus, RecordingApp, TestCA
from tests.integration.sidecar_settings import loopback_settings
from tests.origination_pki import CLIENT_NAME, SERVER_NAME, PkiFiles, write_pki

pytestmark = pytest.mark.integration

CLUSTER = cluster_name(SERVER_NAME, 443)
CATALOG = cluster_name("catalog.default.svc.cluster.local", 80)
STREAMED = 200 * 1024
"""Larger than the 64 KiB the proxy holds in memory: the body streams through aiohttp's client session."""


@dataclass
class HttpsUpstream:
    """An HTTPS server recording, per request, whether it came over TLS, the SNI and the client certificate."""

    pki: PkiFiles
    require_client_cert: bool = False
    port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/ws":
            return await self.echo(request)
        body = await request.read()
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        self.seen.append(
            {
                "path": request.path,
                "secure": request.secure and ssl_object is not None,
                "client": dict(peer.get("subjectAltName", ())).get("DNS") if peer else None,
                "body_length": len(body),
            }
        )
        return web.Response(text=f"hello over TLS {len(body)}")

    async def echo(self, request: web.Request) -> web.WebSocketResponse:
        self.seen.append({"path": request.path, "secure": request.secure, "client": None, "body_length": 0})
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            await socket.send_str(f"tls echo: {message.data}")
        return socket

    async def start(self) -> None:
        context = self.pki.server_context(self.require_client_cert)
        context.sni_callback = lambda _obj, name, _ctx: self.server_names.append(name)
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=context).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
def pki(tmp_path: Path) -> PkiFiles:
    return write_pki(tmp_path / "partner-pki", uri="spiffe://partner.example/api")


@pytest.fixture
async def make_upstream() -> AsyncIterator[Callable[..., Awaitable[HttpsUpstream]]]:
    started: list[HttpsUpstream] = []

    async def make(pki: PkiFiles, require_client_cert: bool = False) -> HttpsUpstream:
        upstream = HttpsUpstream(pki, require_client_cert)
        await upstream.start()
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        await upstream.stop()


def partner_config(
    sidecar: Sidecar,
    port: int,
    tls: dict[str, Any],
    host: str = SERVER_NAME,
    catalog: int | None = None,
    revision: int = 0,
    mirror: bool = False,
) -> ProxyConfig:
    """`api.example.test` routed to one cluster (host `host`, endpoint 127.0.0.1:`port`, no identity) with this
    tls policy; with `catalog`, also a plain-text `catalog` service on that port (`revision`: its endpoint's
    label, to make another config version with the same policies; `mirror`: catalog's requests are
    mirrored to the TLS cluster)."""
    clusters: list[dict[str, Any]] = [
        {
            "name": CLUSTER,
            "host": host,
            "port": 443,
            "endpoints": [{"address": "127.0.0.1", "port": port}],
            "trafficPolicy": {"tls": tls},
        }
    ]
    hosts: list[dict[str, Any]] = [
        {"name": SERVER_NAME, "domains": [SERVER_NAME], "routes": [{"route": [{"cluster": CLUSTER}]}]}
    ]
    if catalog is not None:
        clusters.append(
            {
                "name": CATALOG,
                "host": "catalog.default.svc.cluster.local",
                "port": 80,
                "endpoints": [{"address": "127.0.0.1", "port": catalog, "labels": {"revision": str(revision)}}],
            }
        )
        route: dict[str, Any] = {"route": [{"cluster": CATALOG}]}
        if mirror:
            route["mirrors"] = [{"cluster": CLUSTER}]
        hosts.append({"name": "catalog", "domains": ["catalog"], "routes": [route]})
    return ProxyConfig.model_validate(
        {
            "proxyId": sidecar.proxy_id,
            "service": sidecar.settings.service,
            "namespace": "default",
            "virtualHosts": hosts,
            "clusters": clusters,
        }
    ).versioned()


async def call(
    sidecar: Sidecar, path: str = "/quote", body: bytes | None = None, host: str = SERVER_NAME
) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{sidecar.listeners['outbound'].port}{path}"
    async with aiohttp.ClientSession() as session:
        method = "POST" if body is not None else "GET"
        async with session.request(method, url, data=body, headers={"Host": host}) as reply:
            return reply.status, reply.headers.get("x-isthmus-response-flags", ""), await reply.text()


async def test_simple_originates_tls_verified_against_the_ca_file(
    make_upstream: Any, make_sidecar: Any, bus: ProxyBus, pki: PkiFiles
) -> None:
    upstream = await make_upstream(pki)
    sidecar = await make_sidecar("orders", 1)
    await apply(bus, partner_config(sidecar, upstream.port, {"mode": "SIMPLE", "caCertificates": str(pki.ca)}))
    assert await call(sidecar) == (200, "", "hello over TLS 0")
    assert await call(sidecar, "/again") == (200, "", "hello over TLS 0")
    assert [(seen["path"], seen["secure"], seen["client"]) for seen in upstream.seen] == [
        ("/quote", True, None),
        ("/again", True, None),
    ]
    assert upstream.server_names and set(upstream.server_names) == {SERVER_NAME}


async def test_a_limited_pool_and_a_websocket_are_originated_over_tls(
    make_upstream: Any, make_sidecar: Any, bus: ProxyBus, pki: PkiFiles
) -> None:
    """maxRequestsPerConnection moves every request to aiohttp's session; an upgrade always goes there."""
    upstream = await make_upstream(pki)
    sidecar = await make_sidecar("orders", 1)
    tls = {"mode": "SIMPLE", "caCertificates": str(pki.ca), "subjectAltNames": [SERVER_NAME]}
    config = partner_config(sidecar, upstream.port, tls)
    limited = config.clusters[0].traffic_policy
    assert limited is not None
    pool = {"http": {"maxRequestsPerConnection": 2}}
    policy = limited.model_validate({**limited.model_dump(by_alias=True), "connectionPool": pool})
    cluster = config.clusters[0].model_copy(update={"traffic_policy": policy})
    await apply(bus, config.model_copy(update={"clusters": [cluster]}).versioned())
    assert [(await call(sidecar, f"/{i}"))[:2] for i in range(3)] == [(200, "")] * 3
    url = f"http://127.0.0.1:{sidecar.listeners['outbound'].port}/ws"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers={"Host": SERVER_NAME}) as socket:
            await socket.send_str("hi")
            reply = await socket.receive(timeout=10)
            assert reply.data == "tls echo: hi"
    assert [(seen["path"], seen["secure"]) for seen in upstream.seen] == [
        ("/0", True),
        ("/1", True),
        ("/2", True),
        ("/ws", True),
    ]
    assert set(upstream.server_names) == {SERVER_NAME}


async def test_sni_names_the_server_when_the_cluster_host_differs(
    make_upstream: Any, make_sidecar: Any, bus: ProxyBus, pki: PkiFiles
) -> None:
    upstream = await make_upstream(pki)
    sidecar = await make_sidecar("orders", 1)
    tls = {"mode": "SIMPLE", "caCertificates": str(pki.ca)}
    await apply(bus, partner_config(sidecar, upstream.port, tls, host="partner-api"))
    status, flag, body = await call(sidecar)
    assert (status, flag) == (503, "UF")  # the certificate does not name partner-api
    assert f"cluster {CLUSTER}" in body and "partner-api" in body and "certificate verify failed" in body, body
    await apply(bus, partner_config(sidecar, upstream.port, {**tls, "sni": SERVER_NAME}, host="partner-api"))
    assert (await call(sidecar))[:2] == (200, "")
    assert upstream.server_names[-1] == SERVER_NAME


async def test_a_server_certificate_from_another_ca_fails_closed_with_uf(
    make_upstream: Any, make_sidecar: Any, bus: ProxyBus, pki: PkiFiles, tmp_path: Path
) -> None:
    upstream = await make_upstream(pki)
    other = write_pki(tmp_path / "other-pki")
    sidecar = await make_sidecar("orders", 1)
    await apply(bus, partner_config(sidecar, upstream.port, {"mode": "SIMPLE", "caCertificates": str(other.ca)}))
    status, flag, body = await call(sidecar)
    assert (status, flag) == (503, "UF") and "certificate verify failed" in body, body
    status, flag, _ = await call(sidecar, body=b"s" * STREAMED)
    assert (status, flag) == (503, "UF")
    assert upstream.seen == []


@pytest.mark.parametrize(
    ("names", "status"),
    [
        (["other.example.test"], 503),
        (["other.example.test", SERVER_NAME], 200),
        (["spiffe://partner.example/api"], 200),
        (["spiffe://partner.example/other"], 503),
    ],
)
async def test_subject_alt_names_any_one_suffices_else_fail_closed(
    make_upstream: Any, make_sidecar: Any, bus: ProxyBus, pki: PkiFiles, names: list[str], status: int
) -> None:
    upstream = await make_upstream(pki)
    sidecar = await make_sidecar("orders", 1)
    tls = {"mode": "SIMPLE", "caCertificates": str(pki.ca), "subjectAltNames": names}
    await apply(bus, partner_config(sidecar, upstream.port, tls))
    small = await call(sidecar)
    streamed = await call(sidecar, "/upload", b"s" * STREAMED)
    if status == 200:
        assert (small[:2], streamed[:2]) == ((200, ""), (200, ""))
        assert [seen["body_length"] for seen in upstream.seen] == [0, STREAMED]
    else:
        assert (small[:2], streamed[:2]) == ((503, "UF"), (503, "UF"))
        assert "none of subjectAltNames" in small[2] and "none of subjectAltNames" in streamed[2], small
        assert upstream.seen == []


async def test_mutual_presents_the_client_certificate(
    make_upstream: Any, make_sidecar: Any, bus: ProxyBus, pki: PkiFiles
) -> None:
    upstream = await make_upstream(pki, require_client_cert=True)
    sidecar = await make_sidecar("orders", 1)
    simple = {"mode": "SIMPLE", "caCertificates": str(pki.ca)}
    await apply(bus, partner_config(sidecar, upstream.port, simple))
    assert (await call(sidecar))[:2] == (503, "UF")  # the server wants a client certificate
    mutual = {**simple, "mode": "MUTUAL", "clientCertificate": str(pki.client_cert), "privateKey": str(pki.client_key)}
    await apply(bus, partner_config(sidecar, upstream.port, mutual))
    assert await call(sidecar) == (200, "", "hello over TLS 0")
    assert await call(sidecar, "/upload", b"m" * STREAMED) == (200, "", f"hello over TLS {STREAMED}")
    assert [(seen["secure"], seen["client"], seen["body_length"]) for seen in upstream.seen] == [
        (True, CLIENT_NAME, 0),
        (True, CLIENT_NAME, STREAMED),
    ]


async def test_a_streamed_body_is_originated_over_tls_too(
    make_upstream: Any, make_sidecar: Any, bus: ProxyBus, pki: PkiFiles
) -> None:
    upstream = await make_upstream(pki)
    sidecar = await make_sidecar("orders", 1)
    await apply(bus, partner_config(sidecar, upstream.port, {"mode": "SIMPLE", "caCertificates": str(pki.ca)}))
    assert await call(sidecar, "/upload", b"x" * STREAMED) == (200, "", f"hello over TLS {STREAMED}")
    assert upstream.seen == [{"path": "/upload", "secure": True, "client": None, "body_length": STREAMED}]
    assert set(upstream.server_names) == {SERVER_NAME}


async def test_a_missing_file_fails_only_its_cluster_until_a_later_version(
    make_upstream: Any,
    make_app: Callable[[str], Awaitable[RecordingApp]],
    make_sidecar: Any,
    bus: ProxyBus,
    pki: PkiFiles,
    tmp_path: Path,
) -> None:
    upstream = await make_upstream(pki)
    catalog = await make_app("catalog")
    sidecar = await make_sidecar("orders", 1)
    late = tmp_path / "late" / "ca.pem"
    tls = {"mode": "SIMPLE", "caCertificates": str(late)}
    await apply(bus, partner_config(sidecar, upstream.port, tls, catalog=catalog.port))  # accepted (ACK)
    status, flag, body = await call(sidecar)
    assert (status, flag) == (503, "UF")
    assert f"cluster {CLUSTER}: TLS origination unavailable: caCertificates {late}" in body, body
    assert (await call(sidecar, "/items", host="catalog"))[:2] == (200, "")
    assert (await call(sidecar, "/upload", b"x" * STREAMED))[:2] == (503, "UF")
    late.parent.mkdir()
    late.write_bytes(pki.ca.read_bytes())
    assert (await call(sidecar))[:2] == (503, "UF")  # not before the next check of the files, 5 s on
    await apply(bus, partner_config(sidecar, upstream.port, tls, catalog=catalog.port, revision=1))
    assert (await call(sidecar))[:2] == (200, "")
    assert upstream.seen[-1]["secure"]


RELOAD_INTERVAL = 0.2
"""The check interval of origination files in the rotation tests."""


async def _eventually(attempt: Callable[[], Awaitable[Any]], expected: Any, seconds: float = 15.0) -> Any:
    """`attempt()` until it answers `expected` (returned) or the deadline passes (its last answer, to assert on)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        found = await attempt()
        if found == expected or asyncio.get_running_loop().time() >= deadline:
            return found
        await asyncio.sleep(RELOAD_INTERVAL / 2)


async def test_a_ca_file_rewritten_on_disk_is_picked_up_without_a_new_config_version(
    make_upstream: Any,
    make_sidecar: Any,
    bus: ProxyBus,
    pki: PkiFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MUTUAL origination to an upstream that requires our client certificate; the CA file first holds a CA
    that does not verify the upstream (503 UF), then the right one: requests succeed after the next check."""
    monkeypatch.setattr(origination, "RELOAD_INTERVAL", RELOAD_INTERVAL)
    upstream = await make_upstream(pki, require_client_cert=True)
    sidecar = await make_sidecar("orders", 1)
    live = tmp_path / "live-ca.pem"
    live.write_bytes(write_pki(tmp_path / "other-pki").ca.read_bytes())
    mutual = {
        "mode": "MUTUAL",
        "caCertificates": str(live),
        "clientCertificate": str(pki.client_cert),
        "privateKey": str(pki.client_key),
    }
    await apply(bus, partner_config(sidecar, upstream.port, mutual))
    status, flag, body = await call(sidecar)
    assert (status, flag) == (503, "UF") and "certificate verify failed" in body, body
    assert upstream.seen == []
    live.write_bytes(pki.ca.read_bytes())
    assert await _eventually(lambda: call(sidecar), (200, "", "hello over TLS 0")) == (200, "", "hello over TLS 0")
    assert await call(sidecar, "/upload", b"r" * STREAMED) == (200, "", f"hello over TLS {STREAMED}")
    assert [(seen["client"], seen["body_length"]) for seen in upstream.seen][-2:] == [
        (CLIENT_NAME, 0),
        (CLIENT_NAME, STREAMED),
    ]
    live.write_text("not a certificate\n")  # a broken rewrite keeps the last good certificates
    await asyncio.sleep(RELOAD_INTERVAL * 2)
    assert (await call(sidecar))[:2] == (200, "")


async def test_a_mirror_copy_is_originated_over_tls(
    make_upstream: Any,
    make_app: Callable[[str], Awaitable[RecordingApp]],
    make_sidecar: Any,
    bus: ProxyBus,
    pki: PkiFiles,
) -> None:
    upstream = await make_upstream(pki)
    catalog = await make_app("catalog")
    sidecar = await make_sidecar("orders", 1)
    tls = {"mode": "SIMPLE", "caCertificates": str(pki.ca)}
    await apply(bus, partner_config(sidecar, upstream.port, tls, catalog=catalog.port, mirror=True))
    assert (await call(sidecar, "/items", host="catalog"))[:2] == (200, "")

    async def copied() -> bool:
        return len(upstream.seen) == 1

    await bus.eventually(copied, 10.0, "the mirrored copy at the TLS upstream")
    assert upstream.seen[0]["path"] == "/items" and upstream.seen[0]["secure"]
    assert upstream.server_names == [SERVER_NAME]


@dataclass
class TlsEchoServer:
    """A TCP server over TLS that echoes; records the SNI of each handshake."""

    pki: PkiFiles
    server_names: list[str | None] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):  # a refused caller just goes away
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def start(self) -> int:
        context = self.pki.server_context()
        context.sni_callback = lambda _obj, name, _ctx: self.server_names.append(name)
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=context)
        return int(self.server.sockets[0].getsockname()[1])


def tcp_config(sidecar: Sidecar, port: int, tls: dict[str, Any]) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "proxyId": sidecar.proxy_id,
            "service": sidecar.settings.service,
            "namespace": "default",
            "tcpListeners": [
                {
                    "name": "partner:443",
                    "service": "partner",
                    "upstream": "partner",
                    "port": 443,
                    "routes": [{"route": [{"cluster": CLUSTER}]}],
                }
            ],
            "clusters": [
                {
                    "name": CLUSTER,
                    "host": SERVER_NAME,
                    "port": 443,
                    "endpoints": [{"address": "127.0.0.1", "port": port}],
                    "trafficPolicy": {"tls": tls},
                }
            ],
        }
    ).versioned()


@pytest.fixture
async def tcp_sidecar(tmp_path: Path, test_ca: TestCA) -> AsyncIterator[Sidecar]:
    settings = loopback_settings("orders", 1, tmp_path / "tcp-orders", "tls", upstreams=("partner:443:0",))
    sidecar = Sidecar(settings, InProcessEnroller(CASource(test_ca)), bus_trust_bundle=False)
    async with asyncio.timeout(30):
        await sidecar.start()
    yield sidecar
    await sidecar.stop()


async def _tcp_round_trip(sidecar: Sidecar, data: bytes) -> bytes:
    """What comes back for `data` (b"": the connection was closed). No half-close: asyncio's TLS server
    transport would end the whole connection at our close_notify."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.tcp_outbound.ports["partner:443"])
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(20):
            try:
                return await reader.readexactly(len(data))
            except asyncio.IncompleteReadError as err:
                return err.partial
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_tcp_pass_through_originates_tls(tcp_sidecar: Sidecar, pki: PkiFiles) -> None:
    echo = TlsEchoServer(pki)
    port = await echo.start()
    assert echo.server is not None
    try:
        tls: dict[str, Any] = {"mode": "SIMPLE", "caCertificates": str(pki.ca)}
        tcp_sidecar.state.swap(ConfigSnapshot.build(tcp_config(tcp_sidecar, port, tls), random.Random(1)))
        assert await _tcp_round_trip(tcp_sidecar, b"hello partner") == b"hello partner"
        assert echo.server_names == [SERVER_NAME]
        refused = {**tls, "subjectAltNames": ["other.example.test"]}
        tcp_sidecar.state.swap(ConfigSnapshot.build(tcp_config(tcp_sidecar, port, refused), random.Random(1)))
        assert await _tcp_round_trip(tcp_sidecar, b"never sent") == b""
    finally:
        echo.server.close()
        await echo.server.wait_closed()


async def test_tcp_pass_through_picks_up_a_rewritten_ca_file(
    tcp_sidecar: Sidecar, pki: PkiFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(origination, "RELOAD_INTERVAL", RELOAD_INTERVAL)
    echo = TlsEchoServer(pki)
    port = await echo.start()
    assert echo.server is not None
    try:
        live = tmp_path / "live-ca.pem"
        live.write_bytes(write_pki(tmp_path / "other-pki").ca.read_bytes())
        tls: dict[str, Any] = {"mode": "SIMPLE", "caCertificates": str(live)}
        tcp_sidecar.state.swap(ConfigSnapshot.build(tcp_config(tcp_sidecar, port, tls), random.Random(1)))
        assert await _tcp_round_trip(tcp_sidecar, b"refused") == b""
        live.write_bytes(pki.ca.read_bytes())
        assert await _eventually(lambda: _tcp_round_trip(tcp_sidecar, b"rotated"), b"rotated") == b"rotated"
    finally:
        echo.server.close()
        await echo.server.wait_closed()
