"""Fixtures for proxy integration tests: a test CA behind an in-process enroller, a tiny app, sidecars on free ports."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nats.aio.client import Client as NatsClient

from services.local.infra import start_nats
from services.local.processes import Supervisor, free_port
from services.proxy.enroll_in_process import InProcessEnroller
from services.proxy.kv import ensure_bucket
from services.proxy.sidecar import Sidecar
from services.proxy.telemetry.setup import TelemetrySettings
from shared.bus.codec import Ack
from shared.bus.names import PROXY_CONFIG_BUCKET, PROXY_STATUS_BUCKET, proxy_key
from shared.consul import PROTOCOL_HTTP
from shared.identity.svid import IssuedCertificate
from shared.model.proxy_config import ProxyConfig
from tests.integration.sidecar_settings import loopback_settings

TRUST_DOMAIN = "cluster.local"


class TestCA:
    """A self-signed root that signs workload CSRs, copying the CSR's SPIFFE URI unless told otherwise."""

    __test__ = False

    def __init__(self, name: str = "isthmus test root") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def bundle_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, csr_pem: bytes, ttl: float = 3600.0, uri: str | None = None) -> IssuedCertificate:
        csr = x509.load_pem_x509_csr(csr_pem)
        if uri is None:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uri = san.get_values_for_type(x509.UniformResourceIdentifier)[0]
        now = datetime.datetime.now(datetime.UTC)
        not_after = now + datetime.timedelta(seconds=ttl)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return IssuedCertificate(
            chain_pem=(leaf.public_bytes(serialization.Encoding.PEM),),
            trust_bundle_pem=self.bundle_pem,
            not_after=not_after.timestamp(),
        )


@dataclass
class CASource:
    """CertificateSource backed by a TestCA; counts issues."""

    ca: TestCA
    issued: int = 0

    async def issue(self, csr_pem: bytes) -> IssuedCertificate:
        self.issued += 1
        return self.ca.sign(csr_pem)


@dataclass
class RecordingApp:
    """A tiny upstream app: answers with what it saw, and records every request."""

    name: str
    port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    hold: asyncio.Event = field(default_factory=asyncio.Event)
    fail_with: int | None = None
    """When set, every request is answered with this status."""
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record = {
            "app": self.name,
            "method": request.method,
            "path": request.path_qs,
            "headers": {name.lower(): value for name, value in request.headers.items()},
            "body_length": len(body),
        }
        self.seen.append(record)
        if self.fail_with is not None:
            return web.Response(status=self.fail_with, text=f"{self.name} failing", headers={"x-app": self.name})
        if request.path == "/slow":
            await self.hold.wait()
        if request.path == "/echo":
            return web.Response(body=body, headers={"x-app": self.name})
        return web.json_response(record, headers={"x-app": self.name})

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.hold.set()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture(scope="session")
def test_ca() -> TestCA:
    return TestCA()


@pytest.fixture
def new_ca() -> Callable[[str], TestCA]:
    """Makes further CAs (another root for rotation, an untrusted root)."""
    return TestCA


@pytest.fixture
def ca_enroller() -> Callable[[TestCA], InProcessEnroller]:
    """Enrolls in process with a TestCA."""
    return lambda ca: InProcessEnroller(CASource(ca))


@pytest.fixture(scope="module")
def private_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server of this module's own, for tests that write the mesh-wide trust bundle key."""
    state = tmp_path_factory.mktemp("private-nats")
    supervisor = Supervisor(state / "logs")
    try:
        yield start_nats(supervisor, state).url
    finally:
        supervisor.stop_all()


@pytest.fixture
async def nats_client(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@pytest.fixture
async def make_app() -> AsyncIterator[Callable[[str], Awaitable[RecordingApp]]]:
    apps: list[RecordingApp] = []

    async def make(name: str) -> RecordingApp:
        app = RecordingApp(name)
        await app.start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.stop()


SidecarFactory = Callable[..., Awaitable[Sidecar]]


@pytest.fixture
async def make_sidecar(tmp_path: Path, test_ca: TestCA, nats_client: NatsClient) -> AsyncIterator[SidecarFactory]:
    sidecars: list[Sidecar] = []

    async def make(
        service: str,
        app_port: int,
        *,
        use_nats: bool = True,
        consul_addr: str | None = None,
        host: str | None = None,
        state_dir: Path | None = None,
        locality: str | None = None,
        gateway: bool = False,
        protocol: str = PROTOCOL_HTTP,
        metrics: bool = False,
    ) -> Sidecar:
        settings = loopback_settings(
            service, app_port, state_dir or tmp_path / f"proxy-{service}-{len(sidecars)}", locality=locality
        )
        if gateway:
            settings = replace(settings, gateway=True, labels=(("istio", "ingressgateway"),))
        if protocol != PROTOCOL_HTTP:
            settings = replace(settings, protocol=protocol)
        if metrics:  # Istio's metrics, on a Prometheus port of its own (any free one)
            settings = replace(settings, telemetry=TelemetrySettings(prometheus_port=0))
        if host is not None:
            settings = replace(settings, host=host)
        sidecar = Sidecar(
            settings,
            InProcessEnroller(CASource(test_ca)),
            nats=nats_client if use_nats else None,
            consul_addr=consul_addr,
            bus_trust_bundle=False,  # this test CA, whatever another test published on the shared bus
        )
        await sidecar.start()
        sidecars.append(sidecar)
        return sidecar

    yield make
    for sidecar in sidecars:
        await sidecar.stop()


@dataclass
class ProxyBus:
    """The control-plane side of the tests: pushes configs to proxies and reads their ACKs, over real NATS."""

    client: NatsClient

    async def push(self, config: ProxyConfig | bytes, proxy_id: str | None = None) -> None:
        bucket = await ensure_bucket(self.client.jetstream(), PROXY_CONFIG_BUCKET)
        if isinstance(config, ProxyConfig):
            await bucket.put(proxy_key(config.proxy_id), config.to_json())
        else:
            assert proxy_id is not None, "raw config bytes need the proxy id"
            await bucket.put(proxy_key(proxy_id), config)

    async def ack(self, proxy_id: str, version: str, within: float = 10.0) -> Ack:
        """Poll the status bucket until this proxy answered `version`."""
        bucket = await ensure_bucket(self.client.jetstream(), PROXY_STATUS_BUCKET)
        deadline = time.monotonic() + within
        last: Ack | None = None
        while time.monotonic() < deadline:
            try:
                entry = await bucket.get(proxy_key(proxy_id))
            except nats.js.errors.KeyNotFoundError:
                entry = None
            if entry is not None and entry.value:
                last = Ack.from_json(entry.value)
                if last.version == version:
                    return last
            await asyncio.sleep(0.02)
        raise AssertionError(f"no ack for {proxy_id} version {version} within {within}s (last: {last})")

    @staticmethod
    async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out after {within}s waiting for {what}")


@pytest.fixture
def bus(nats_client: NatsClient) -> ProxyBus:
    return ProxyBus(nats_client)
