"""Fixtures for telemetry tests: a real citadel CA, two in-process sidecars with telemetry on, an OTLP receiver."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from nats.aio.client import Client as NatsClient
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from services.citadel.ca import CertificateAuthority
from services.citadel.testing import DirectCaSource
from services.local.processes import free_port
from services.proxy.enroll_in_process import InProcessEnroller
from services.proxy.sidecar import Sidecar
from services.proxy.snapshot import ConfigSnapshot
from services.proxy.telemetry.setup import TelemetrySettings
from services.proxy.telemetry.tracing import TracingSettings
from shared.model.proxy_config import ProxyConfig
from shared.peer_metadata import PEER_METADATA
from tests.integration.sidecar_settings import loopback_settings

TRUST_DOMAIN = "cluster.local"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP gRPC trace collector built from the protocol's generated servicer; keeps every span."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.keep(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def keep(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
            )
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((service, span) for span in scope_spans.spans)


@pytest.fixture
async def otlp() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield receiver, f"127.0.0.1:{port}"
    await server.stop(0)


@pytest.fixture
async def otlp_http() -> AsyncIterator[tuple[Receiver, str]]:
    """An OTLP/HTTP trace collector (protobuf POSTs to /v1/traces); yields it and its traces URL."""
    receiver = Receiver()

    async def export(request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415, text=f"unexpected content type {request.content_type}")
        receiver.keep(trace_service_pb2.ExportTraceServiceRequest.FromString(await request.read()))
        body = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield receiver, f"http://127.0.0.1:{port}/v1/traces"
    await runner.cleanup()


@dataclass
class EchoApp:
    """The app behind a sidecar: records the headers it saw; /fail answers 503; /claim answers with the
    `x-echo-claim` request header's value as its own peer metadata header (a spoofing app)."""

    seen: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.seen.append({k.lower(): v for k, v in request.headers.items()})
        if request.path == "/fail":
            return web.Response(status=503, text="failing")
        if request.path == "/claim":
            return web.Response(text="claimed", headers={PEER_METADATA: request.headers.get("x-echo-claim", "")})
        return web.Response(text="hello from the app")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


MeshFactory = Callable[..., Awaitable[Sidecar]]


@pytest.fixture
async def make_sidecar(tmp_path: Path) -> AsyncIterator[MeshFactory]:
    ca = CertificateAuthority.create(TRUST_DOMAIN)
    made: list[Sidecar] = []
    apps: list[EchoApp] = []

    async def make(
        service: str,
        version: str = "v1",
        consul_addr: str | None = None,
        nats: NatsClient | None = None,
        **telemetry: Any,
    ) -> Sidecar:
        app = EchoApp()
        await app.start()
        apps.append(app)
        tracing = TracingSettings(telemetry.pop("trace_endpoint", None), telemetry.pop("sampling", 100.0))
        settings = loopback_settings(
            service,
            app.port,
            tmp_path / f"proxy-{service}-{len(made)}",
            "telemetry",
            version=version,
            telemetry=TelemetrySettings(prometheus_port=0, tracing=tracing, **telemetry),
        )
        sidecar = Sidecar(
            settings, InProcessEnroller(DirectCaSource(ca)), nats=nats, consul_addr=consul_addr, bus_trust_bundle=False
        )
        sidecar.app = app  # type: ignore[attr-defined]
        made.append(sidecar)
        async with asyncio.timeout(30):
            await sidecar.start()
        return sidecar

    yield make
    for sidecar in made:
        await sidecar.stop()
    for app in apps:
        if app.runner is not None:
            await app.runner.cleanup()


def apply_config(sidecar: Sidecar, config: ProxyConfig) -> None:
    sidecar.state.swap(ConfigSnapshot.build(config.versioned(), random.Random(1)))


def route_to(caller: Sidecar, target: Sidecar, host: str = "reviews", labels: bool = True) -> ProxyConfig:
    """Caller's config: `host` -> a cluster holding target's inbound listener, with its identity and
    (unless `labels` is False) its labels."""
    cluster = f"outbound|80||{host}"
    endpoint_labels = {"app": target.settings.service, "version": target.settings.version, "namespace": "default"}
    return ProxyConfig.model_validate(
        {
            "proxyId": caller.proxy_id,
            "service": caller.settings.service,
            "namespace": "default",
            "virtualHosts": [
                {"name": host, "domains": [host], "routes": [{"name": "r1", "route": [{"cluster": cluster}]}]}
            ],
            "clusters": [
                {
                    "name": cluster,
                    "host": host,
                    "port": 80,
                    "endpoints": [
                        {
                            "address": "127.0.0.1",
                            "port": target.listeners["inbound"].port,
                            "identity": target.settings.spiffe_id,
                            "labels": endpoint_labels if labels else {},
                        }
                    ],
                }
            ],
        }
    )


def empty_config(sidecar: Sidecar) -> ProxyConfig:
    return ProxyConfig(proxy_id=sidecar.proxy_id, service=sidecar.settings.service, namespace="default")


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within}s waiting for {what}")
