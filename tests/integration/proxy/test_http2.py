"""HTTP/2 through the mesh: grpc client -> outbound sidecar (HTTP/2) -> mTLS HTTP/2 -> inbound sidecar -> gRPC app,
and an HTTP/1.1 caller of an app declared http2.

Real grpcio on both ends, real sockets, real TLS and real NATS KV; the sidecars speak HTTP/2 because the
server's port is declared `grpc` or `http2` (its endpoint is `http2`).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
from aiohttp import web
from multidict import CIMultiDict

from services.local.processes import free_port
from services.pilot.snapshot import Snapshot
from services.pilot.testing import resources
from services.proxy.h2client import H2Pool
from services.proxy.listeners import start_listener
from services.proxy.request_view import RequestView
from services.proxy.sidecar import Sidecar
from shared.consul import PROTOCOL_GRPC, PROTOCOL_HTTP2
from shared.model.destination_rule import TrafficPolicy
from shared.model.proxy_config import ProxyConfig, cluster_name
from tests.integration.proxy.test_mesh_path import inbound_config, outbound_config, outbound_url
from tests.integration.proxy.test_outbound_transport import instance, push_generated
from tests.integration.sidecar_settings import metric
from tests.origination_pki import PkiFiles, write_pki

pytestmark = pytest.mark.integration

HOST = "echo.default.svc.cluster.local"
CLUSTER = cluster_name(HOST, 50051)


@dataclass
class EchoApp:
    """A gRPC service with raw-bytes methods: what it saw of each call, and failures to give first."""

    port: int = 0
    calls: list[str] = field(default_factory=list)
    seen_peers: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    fail_first: int = 0
    """How many calls of Flaky answer UNAVAILABLE before one succeeds."""
    server: grpc.aio.Server | None = None

    async def say(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.calls.append("Say")
        metadata = dict(context.invocation_metadata() or ())
        self.seen_peers.append(str(metadata.get("x-forwarded-client-cert", "")))
        context.set_trailing_metadata((("x-echo-trailer", "kept"),))
        return b"echo:" + request

    async def missing(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.calls.append("Missing")
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        raise AssertionError("abort raises")

    async def flaky(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.calls.append("Flaky")
        if self.fail_first > 0:
            self.fail_first -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        return b"finally"

    async def count(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        self.calls.append("Count")
        for i in range(int(request)):
            yield i.to_bytes(4, "big") + b"x" * 16_000

    async def total(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.calls.append("Total")
        size = 0
        async for chunk in requests:
            size += len(chunk)
        return str(size).encode()

    async def chat(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        self.calls.append("Chat")
        async for message in requests:
            yield b"re:" + message

    async def slow(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.calls.append("Slow")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.append("Slow")  # the call was reset: the app stops working on it
            raise
        return b"late"

    async def start(self) -> None:
        handlers = {
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
            "Say": grpc.unary_unary_rpc_method_handler(self.say),
            "Missing": grpc.unary_unary_rpc_method_handler(self.missing),
            "Flaky": grpc.unary_unary_rpc_method_handler(self.flaky),
            "Count": grpc.unary_stream_rpc_method_handler(self.count),
            "Total": grpc.stream_unary_rpc_method_handler(self.total),
        }
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()


@pytest.fixture
async def echo_app() -> AsyncIterator[EchoApp]:
    app = EchoApp()
    await app.start()
    yield app
    assert app.server is not None
    await app.server.stop(None)


def grpc_config(caller: Sidecar, target: Sidecar, route: dict[str, Any] | None = None) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "proxyId": caller.proxy_id,
            "service": caller.settings.service,
            "namespace": "default",
            "virtualHosts": [
                {
                    "name": "echo",
                    "domains": ["echo", f"echo:{50051}", HOST, f"{HOST}:50051"],
                    "routes": [{"route": [{"cluster": CLUSTER}], **(route or {})}],
                }
            ],
            "clusters": [
                {
                    "name": CLUSTER,
                    "host": HOST,
                    "port": 50051,
                    "endpoints": [
                        {
                            "address": "127.0.0.1",
                            "port": target.listeners["inbound"].port,
                            "identity": target.settings.spiffe_id,
                            "http2": True,
                        }
                    ],
                }
            ],
        }
    ).versioned()


@dataclass
class GrpcMesh:
    app: EchoApp
    caller: Sidecar
    server: Sidecar
    channel: grpc.aio.Channel

    def unary(self, method: str) -> Any:
        return self.channel.unary_unary(f"/test.Echo/{method}")


@pytest.fixture
async def grpc_mesh(echo_app: EchoApp, make_sidecar: Any, bus: Any) -> AsyncIterator[Any]:
    async def build(route: dict[str, Any] | None = None, policies: list[dict[str, Any]] | None = None) -> GrpcMesh:
        server = await make_sidecar("echo", echo_app.port, protocol=PROTOCOL_GRPC, metrics=True)
        caller = await make_sidecar("client", 1, metrics=True)
        await bus.push(inbound_config(server, policies))
        config = grpc_config(caller, server, route)
        await bus.push(config)
        await bus.ack(caller.proxy_id, config.version)
        await server.config.applied.wait()
        port = caller.listeners["outbound"].port
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.default_authority", "echo:50051")])
        channels.append(channel)
        return GrpcMesh(echo_app, caller, server, channel)

    channels: list[grpc.aio.Channel] = []
    yield build
    for channel in channels:
        await channel.close()


async def test_unary_call_crosses_the_mesh_with_identity_and_trailers(grpc_mesh: Any) -> None:
    mesh = await grpc_mesh()
    call = mesh.unary("Say")(b"hello", timeout=10)
    assert await call == b"echo:hello"
    assert await call.code() == grpc.StatusCode.OK
    trailers = dict(await call.trailing_metadata() or ())
    assert trailers.get("x-echo-trailer") == "kept"
    assert mesh.caller.settings.spiffe_id in mesh.app.seen_peers[0]


async def test_app_status_and_message_reach_the_client(grpc_mesh: Any) -> None:
    mesh = await grpc_mesh()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.unary("Missing")(b"", timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no such thing"
    assert await mesh.unary("Say")(b"x", timeout=10) == b"echo:x"
    # Istio's grpc_response_status label: NOT_FOUND (5) and OK (0), from the trailers, on both sides.
    for sidecar in (mesh.caller, mesh.server):
        requests = "istio_requests_total"
        assert metric(sidecar, requests, request_protocol="grpc", response_code="200", grpc_response_status="5") == 1
        assert metric(sidecar, requests, request_protocol="grpc", response_code="200", grpc_response_status="0") == 1


async def test_streams_both_ways_pass_with_flow_control(grpc_mesh: Any) -> None:
    mesh = await grpc_mesh()
    messages = [m async for m in mesh.channel.unary_stream("/test.Echo/Count")(b"300", timeout=30)]
    assert len(messages) == 300  # 4.8 MB: several times every stream window on the path
    assert [int.from_bytes(m[:4], "big") for m in messages] == list(range(300))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(200):
            yield b"y" * 20_000

    total = await mesh.channel.stream_unary("/test.Echo/Total")(chunks(), timeout=30)
    assert total == b"4000000"


async def test_a_bidirectional_stream_is_relayed_message_by_message(grpc_mesh: Any) -> None:
    mesh = await grpc_mesh()
    call = mesh.channel.stream_stream("/test.Echo/Chat")(timeout=30)
    for i in range(5):  # each answer comes back before the next message is sent: nothing waits for the end
        await call.write(f"m{i}".encode())
        assert await call.read() == f"re:m{i}".encode()
    await call.done_writing()
    assert await call.code() == grpc.StatusCode.OK


async def test_a_route_timeout_answers_unavailable_and_cancels_the_call_at_the_app(grpc_mesh: Any) -> None:
    mesh = await grpc_mesh({"timeout": "0.3s"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.unary("Slow")(b"", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # 504 UT, as Envoy maps it for gRPC
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not mesh.app.cancelled:  # the reset crosses both sidecars to the app
        assert loop.time() < deadline, "the app never saw the call cancelled"
        await asyncio.sleep(0.02)
    assert mesh.app.cancelled == ["Slow"]


async def test_a_call_the_client_cancels_is_cancelled_at_the_app(grpc_mesh: Any) -> None:
    mesh = await grpc_mesh()
    call = mesh.unary("Slow")(b"", timeout=30)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while "Slow" not in mesh.app.calls:
        assert loop.time() < deadline, "the call never reached the app"
        await asyncio.sleep(0.02)
    call.cancel()  # RST_STREAM from the client: its sidecar resets the upstream stream, and so on to the app
    while not mesh.app.cancelled:
        assert loop.time() < deadline, "the app never saw the call cancelled"
        await asyncio.sleep(0.02)
    assert mesh.app.cancelled == ["Slow"]


async def test_unavailable_is_retried_by_the_route_policy(grpc_mesh: Any) -> None:
    mesh = await grpc_mesh({"retries": {"attempts": 3, "retryOn": "unavailable"}})
    mesh.app.fail_first = 2
    assert await mesh.unary("Flaky")(b"", timeout=10) == b"finally"
    assert mesh.app.calls.count("Flaky") == 3


async def test_local_replies_are_grpc_statuses(grpc_mesh: Any) -> None:
    deny = [{"name": "deny-all", "namespace": "default", "spec": {"action": "DENY", "rules": [{}]}}]
    mesh = await grpc_mesh(policies=deny)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.unary("Say")(b"x", timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert mesh.app.calls == []
    denied = metric(mesh.server, "istio_requests_total", response_code="403", grpc_response_status="7")
    assert denied == 1  # the local reply's gRPC status, as the client saw it

    port = mesh.caller.listeners["outbound"].port
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.default_authority", "nowhere:1")]
    ) as unknown:
        with pytest.raises(grpc.aio.AioRpcError) as no_route:
            await unknown.unary_unary("/test.Echo/Say")(b"x", timeout=10)
    assert no_route.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def caller_of_http2_app(app_port: int, make_sidecar: Any, bus: Any) -> Sidecar:
    """A sidecar in front of an app declared http2 and a caller's sidecar configured to reach it; the caller."""
    server = await make_sidecar("echo", app_port, protocol=PROTOCOL_HTTP2)
    caller: Sidecar = await make_sidecar("client", 1)
    await bus.push(inbound_config(server))
    config = grpc_config(caller, server)
    await bus.push(config)
    await bus.ack(caller.proxy_id, config.version)
    await server.config.applied.wait()
    return caller


async def test_an_http1_caller_reaches_an_http2_app_over_http2(make_sidecar: Any, bus: Any) -> None:
    """HTTP/1.1 from the app, HTTP/2 between the sidecars and to the app behind them (declared http2)."""
    seen: list[str] = []

    async def handle(request: RequestView) -> web.Response:
        seen.append(f"HTTP/{request.version.major} {request.method} {request.raw_path}")
        body = await request.read() if request.body_exists else b""
        return web.Response(body=b"got " + body, headers={"x-app": "h2"})

    app = await start_listener("app", handle, "127.0.0.1", 0, pass_through=True)
    try:
        caller = await caller_of_http2_app(app.port, make_sidecar, bus)
        url = f"http://127.0.0.1:{caller.listeners['outbound'].port}/items?id=7"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=b"x" * 200_000, headers={"Host": "echo"}) as reply:
                assert reply.status == 200
                assert reply.headers["x-app"] == "h2"
                assert await reply.read() == b"got " + b"x" * 200_000
        assert seen == ["HTTP/2 POST /items?id=7"]
    finally:
        await app.close()


def grpc_gateway_yaml(grpc_port: int, https_port: int, pki: PkiFiles) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: public}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {grpc_port}, name: grpc, protocol: GRPC}}
    hosts: ["*"]
  - port: {{number: {https_port}, name: https, protocol: HTTPS}}
    hosts: [echo.example.test]
    tls: {{mode: SIMPLE, serverCertificate: {pki.server_cert}, privateKey: {pki.server_key}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [echo.example.test]
  gateways: [public]
  http:
  - match: [{{uri: {{prefix: /test.Echo/}}}}]
    route: [{{destination: {{host: echo}}}}]
"""


async def test_grpc_enters_through_the_gateway_in_plain_text_and_over_tls(
    echo_app: EchoApp, make_sidecar: Any, bus: Any, tmp_path: Path
) -> None:
    server = await make_sidecar("echo", echo_app.port, protocol=PROTOCOL_GRPC)
    gateway = await make_sidecar("ingressgateway", 0, gateway=True)
    pki = write_pki(tmp_path / "pki", server_names=("echo.example.test",))
    grpc_port, https_port = free_port(), free_port()
    catalog = [instance(server), instance(gateway)]
    await push_generated(
        bus, Snapshot.build(resources(grpc_gateway_yaml(grpc_port, https_port, pki)), catalog), server, gateway
    )
    assert gateway.gateway is not None
    served = gateway.gateway.served
    await bus.eventually(lambda: _true(grpc_port in served and https_port in served), 10.0, "the gateway's servers")

    authority = [("grpc.default_authority", "echo.example.test")]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}", options=authority) as plain:
        assert await plain.unary_unary("/test.Echo/Say")(b"plain", timeout=10) == b"echo:plain"
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    target = [("grpc.ssl_target_name_override", "echo.example.test"), *authority]
    async with grpc.aio.secure_channel(f"127.0.0.1:{https_port}", credentials, options=target) as secure:
        assert await secure.unary_unary("/test.Echo/Say")(b"tls", timeout=10) == b"echo:tls"
    assert all(gateway.settings.spiffe_id in peer for peer in echo_app.seen_peers)
    assert len(echo_app.seen_peers) == 2


async def _true(value: bool) -> bool:
    return value


async def test_h2_upgrade_policy_carries_http1_calls_between_sidecars_over_http2(
    make_app: Any, make_sidecar: Any, bus: Any
) -> None:
    app = await make_app("reviews")
    server = await make_sidecar("reviews", app.port)
    caller = await make_sidecar("productpage", 1)
    await bus.push(inbound_config(server))
    config = outbound_config(caller, server)
    upgraded = config.model_copy(
        update={
            "clusters": [
                cluster.model_copy(
                    update={
                        "traffic_policy": TrafficPolicy.model_validate(
                            {"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}}
                        )
                    }
                )
                for cluster in config.clusters
            ]
        }
    ).versioned()
    await bus.push(upgraded)
    await bus.ack(caller.proxy_id, upgraded.version)
    await server.config.applied.wait()
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.post(outbound_url(caller), data=b"body", headers={"Host": "reviews"}) as reply:
                assert reply.status == 200
    front = server.listeners["inbound"].front
    assert front is not None
    assert [type(c).__name__ for c in front.connections] == ["H2ServerProtocol"]  # one connection, multiplexed
    assert [seen["path"] for seen in app.seen] == ["/", "/", "/"]  # the app itself is called as it speaks


async def test_grpc_to_a_tls_server_outside_the_mesh_with_originated_tls(
    make_sidecar: Any, bus: Any, tmp_path: Path
) -> None:
    """The app speaks plain gRPC to its sidecar; the sidecar originates TLS with ALPN h2 (DestinationRule
    tls SIMPLE) to a gRPC server that has no sidecar, as to an external gRPC API behind a ServiceEntry."""
    pki = write_pki(tmp_path / "pki", server_names=("grpc.example.test",))
    app = EchoApp()
    app.server = grpc.aio.server()
    handlers = {"Say": grpc.unary_unary_rpc_method_handler(app.say)}
    app.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    credentials = grpc.ssl_server_credentials([(pki.server_key.read_bytes(), pki.server_cert.read_bytes())])
    port = app.server.add_secure_port("127.0.0.1:0", credentials)
    await app.server.start()
    try:
        caller = await make_sidecar("client", 1)
        cluster = cluster_name("grpc.example.test", 443)
        config = ProxyConfig.model_validate(
            {
                "proxyId": caller.proxy_id,
                "service": "client",
                "namespace": "default",
                "virtualHosts": [
                    {"name": "grpc", "domains": ["grpc.example.test"], "routes": [{"route": [{"cluster": cluster}]}]}
                ],
                "clusters": [
                    {
                        "name": cluster,
                        "host": "grpc.example.test",
                        "port": 443,
                        "endpoints": [{"address": "127.0.0.1", "port": port, "http2": True}],
                        "trafficPolicy": {"tls": {"mode": "SIMPLE", "caCertificates": str(pki.ca)}},
                    }
                ],
            }
        ).versioned()
        await bus.push(config)
        await bus.ack(caller.proxy_id, config.version)
        outbound = f"127.0.0.1:{caller.listeners['outbound'].port}"
        async with grpc.aio.insecure_channel(outbound, options=[("grpc.default_authority", "grpc.example.test")]) as ch:
            assert await ch.unary_unary("/test.Echo/Say")(b"out", timeout=10) == b"echo:out"
        assert app.seen_peers == [""]  # no mesh identity: an external server sees no XFCC
    finally:
        await app.server.stop(None)


async def test_use_client_protocol_keeps_each_callers_protocol_between_the_sidecars(
    make_sidecar: Any, bus: Any
) -> None:
    """useClientProtocol: an HTTP/1.1 caller's request crosses to the server sidecar as HTTP/1.1 and an HTTP/2
    caller's as HTTP/2, though the port is declared http2; the app is called as it declares, over HTTP/2."""
    seen: list[str] = []

    async def handle(request: RequestView) -> web.Response:
        seen.append(f"HTTP/{request.version.major}")
        return web.Response(text="ok")

    app = await start_listener("app", handle, "127.0.0.1", 0, pass_through=True)
    try:
        server = await make_sidecar("echo", app.port, protocol=PROTOCOL_HTTP2)
        caller = await make_sidecar("client", 1)
        await bus.push(inbound_config(server))
        config = grpc_config(caller, server)
        policy = TrafficPolicy.model_validate({"connectionPool": {"http": {"useClientProtocol": True}}})
        config = config.model_copy(
            update={"clusters": [c.model_copy(update={"traffic_policy": policy}) for c in config.clusters]}
        ).versioned()
        await bus.push(config)
        await bus.ack(caller.proxy_id, config.version)
        await server.config.applied.wait()
        front = server.listeners["inbound"].front
        assert front is not None

        async with aiohttp.ClientSession() as session:
            async with session.get(outbound_url(caller), headers={"Host": "echo"}) as reply:
                assert reply.status == 200
        assert [type(c).__name__ for c in front.connections] == ["PassThroughProtocol"]

        pool = H2Pool("127.0.0.1", caller.listeners["outbound"].port, None, 5.0)
        try:
            response = await pool.request("GET", "/", CIMultiDict({"Host": "echo"}), None, None)
            assert response.status == 200
            response.release()
        finally:
            pool.close()
        assert sorted(type(c).__name__ for c in front.connections) == ["H2ServerProtocol", "PassThroughProtocol"]
        assert seen == ["HTTP/2", "HTTP/2"]
    finally:
        await app.close()


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def frames_of(body: bytes) -> list[tuple[int, bytes]]:
    found, offset = [], 0
    while offset < len(body):
        flag, length = body[offset], int.from_bytes(body[offset + 1 : offset + 5], "big")
        found.append((flag, body[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    return found


async def test_grpc_web_calls_from_http1_reach_the_grpc_app_and_get_their_trailers_in_the_body(
    grpc_mesh: Any,
) -> None:
    """A browser's gRPC-Web call over HTTP/1.1: sent to the app as gRPC over HTTP/2, answered as gRPC-Web."""
    mesh = await grpc_mesh()
    url = f"http://127.0.0.1:{mesh.caller.listeners['outbound'].port}/test.Echo/Say"
    headers = {"Host": "echo", "Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=grpc_frame(b"web"), headers=headers) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"] == "application/grpc-web+proto"
            frames = frames_of(await reply.read())
        assert frames[0] == (0x00, b"echo:web")
        flag, block = frames[1]
        trailers = dict(line.split(":", 1) for line in block.decode().split("\r\n") if line)
        assert flag == 0x80 and trailers["grpc-status"] == "0" and trailers["x-echo-trailer"] == "kept"

        text_headers = {**headers, "Content-Type": "application/grpc-web-text"}
        body = base64.b64encode(grpc_frame(b"txt"))
        async with session.post(url, data=body, headers=text_headers) as reply:
            assert reply.headers["Content-Type"] == "application/grpc-web-text"
            frames = frames_of(base64.b64decode(await reply.read()))
        assert frames[0] == (0x00, b"echo:txt") and b"grpc-status:0" in frames[1][1]

        missing = url.replace("/Say", "/Missing")
        async with session.post(missing, data=grpc_frame(b""), headers=headers) as reply:
            assert reply.status == 200 and reply.headers["grpc-status"] == "5"  # trailers-only: in the headers

        async with session.post(url, data=b"%%% not base64", headers=text_headers) as reply:
            assert reply.status == 400
    assert mesh.app.calls == ["Say", "Say", "Missing"]


async def test_request_trailers_reach_the_http2_app_through_both_sidecars(make_sidecar: Any, bus: Any) -> None:
    """Trailers after a request body (small, sent with its headers; large, streamed through the windows) are relayed
    by the caller's sidecar and the app's sidecar, as the caller sent them."""
    seen: list[tuple[int, dict[str, str]]] = []

    async def handle(request: RequestView) -> web.Response:
        body = await request.read()
        trailers = getattr(request, "trailers", lambda: None)()
        seen.append((len(body), dict(trailers or {})))
        return web.Response(text="ok")

    app = await start_listener("app", handle, "127.0.0.1", 0, pass_through=True)
    client = None
    try:
        caller = await caller_of_http2_app(app.port, make_sidecar, bus)
        client = H2Pool("127.0.0.1", caller.listeners["outbound"].port, None, 5.0)
        for size in (5, 300_000):
            ending: CIMultiDict[str] = CIMultiDict({"x-checksum": f"sum-{size}"})

            def trailers(ending: CIMultiDict[str] = ending) -> CIMultiDict[str]:
                return ending

            response = await client.request(
                "POST", "/upload", CIMultiDict({"Host": "echo"}), b"u" * size, None, trailers
            )
            try:
                assert response.status == 200
                assert await response.content.read() == b"ok"
            finally:
                response.release()
        assert seen == [(5, {"x-checksum": "sum-5"}), (300_000, {"x-checksum": "sum-300000"})]
    finally:
        if client is not None:
            client.close()
        await app.close()
