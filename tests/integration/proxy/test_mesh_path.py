"""App -> outbound sidecar -> mTLS -> inbound sidecar -> app, over real sockets, real TLS and real NATS KV."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from services.proxy.sidecar import Sidecar
from services.proxy.tls import client_context
from shared.model.proxy_config import ProxyConfig, cluster_name

pytestmark = pytest.mark.integration

REVIEWS = cluster_name("reviews.default.svc.cluster.local", 9080)


def outbound_config(
    caller: Sidecar,
    target: Sidecar,
    identity: str | None = None,
    timeout: str | None = None,
) -> ProxyConfig:
    route: dict[str, Any] = {"route": [{"cluster": REVIEWS}]}
    if timeout is not None:
        route["timeout"] = timeout
    return ProxyConfig.model_validate(
        {
            "proxyId": caller.proxy_id,
            "service": caller.settings.service,
            "namespace": "default",
            "virtualHosts": [
                {
                    "name": "reviews",
                    "domains": ["reviews", "reviews.default.svc.cluster.local"],
                    "routes": [route],
                }
            ],
            "clusters": [
                {
                    "name": REVIEWS,
                    "host": "reviews.default.svc.cluster.local",
                    "port": 9080,
                    "endpoints": [
                        {
                            "address": "127.0.0.1",
                            "port": target.listeners["inbound"].port,
                            "identity": identity or target.settings.spiffe_id,
                        }
                    ],
                }
            ],
        }
    ).versioned()


def inbound_config(sidecar: Sidecar, policies: list[dict[str, Any]] | None = None) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "proxyId": sidecar.proxy_id,
            "service": sidecar.settings.service,
            "namespace": "default",
            "inbound": {"mtlsMode": "STRICT", "authorization": policies or []},
        }
    ).versioned()


async def mesh(make_app: Any, make_sidecar: Any, bus: Any, **outbound: Any) -> tuple[Any, Sidecar, Sidecar]:
    app = await make_app("reviews")
    server = await make_sidecar("reviews", app.port)
    caller = await make_sidecar("productpage", 1)
    await bus.push(inbound_config(server))
    config = outbound_config(caller, server, **outbound)
    await bus.push(config)
    await bus.ack(caller.proxy_id, config.version)
    await server.config.applied.wait()
    return app, caller, server


def outbound_url(sidecar: Sidecar, path: str = "/") -> str:
    return f"http://127.0.0.1:{sidecar.listeners['outbound'].port}{path}"


async def test_request_crosses_mtls_and_app_sees_caller_identity(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app, caller, server = await mesh(make_app, make_sidecar, bus)
    async with aiohttp.ClientSession() as session:
        async with session.get(
            outbound_url(caller, "/reviews/1?x=y"),
            headers={"Host": "reviews", "x-forwarded-client-cert": "By=forged;URI=spiffe://evil/ns/a/sa/b"},
        ) as reply:
            assert reply.status == 200, await reply.text()
            body = await reply.json()
            assert reply.headers["x-app"] == "reviews"
    headers = body["headers"]
    assert headers["x-forwarded-client-cert"] == (f"By={server.settings.spiffe_id};URI={caller.settings.spiffe_id}")
    assert body["path"] == "/reviews/1?x=y"
    assert headers["x-request-id"]
    assert "127.0.0.1" in headers["x-forwarded-for"]
    assert len(app.seen) == 1


async def test_absolute_form_request_through_http_proxy(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app, caller, _ = await mesh(make_app, make_sidecar, bus)
    proxy = f"http://127.0.0.1:{caller.listeners['outbound'].port}"
    async with aiohttp.ClientSession() as session:
        async with session.get("http://reviews.default.svc.cluster.local:9080/abs", proxy=proxy) as reply:
            assert reply.status == 200, await reply.text()
    assert app.seen[-1]["path"] == "/abs"


async def test_streamed_body_arrives_intact(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    _, caller, _ = await mesh(make_app, make_sidecar, bus)
    payload = bytes(range(256)) * 8192  # 2 MiB

    async def chunks() -> Any:
        for start in range(0, len(payload), 65536):
            yield payload[start : start + 65536]

    async with aiohttp.ClientSession() as session:
        async with session.post(outbound_url(caller, "/echo"), data=chunks(), headers={"Host": "reviews"}) as reply:
            assert reply.status == 200
            assert await reply.read() == payload


async def test_wrong_peer_identity_is_refused_before_the_request_is_sent(
    make_app: Any, make_sidecar: Any, bus: Any
) -> None:
    app, caller, _ = await mesh(make_app, make_sidecar, bus, identity="spiffe://cluster.local/ns/default/sa/impostor")
    async with aiohttp.ClientSession() as session:
        async with session.get(outbound_url(caller), headers={"Host": "reviews"}) as reply:
            assert reply.status == 503
            assert reply.headers["x-isthmus-response-flags"] == "UF"
            assert "impostor" in await reply.text()
    assert app.seen == []


async def test_unknown_host_is_404_nr(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    _, caller, _ = await mesh(make_app, make_sidecar, bus)
    async with aiohttp.ClientSession() as session:
        async with session.get(outbound_url(caller), headers={"Host": "ratings"}) as reply:
            assert reply.status == 404
            assert reply.headers["x-isthmus-response-flags"] == "NR"


async def test_route_timeout_is_504_ut(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    _, caller, _ = await mesh(make_app, make_sidecar, bus, timeout="0.2s")
    async with aiohttp.ClientSession() as session:
        async with session.get(outbound_url(caller, "/slow"), headers={"Host": "reviews"}) as reply:
            assert reply.status == 504
            assert reply.headers["x-isthmus-response-flags"] == "UT"


async def test_route_timeout_holds_on_kept_connections_and_they_serve_on(
    make_app: Any, make_sidecar: Any, bus: Any
) -> None:
    _, caller, _ = await mesh(make_app, make_sidecar, bus, timeout="1s")
    async with aiohttp.ClientSession() as session:
        for path in ("/a", "/slow", "/b", "/slow", "/c"):  # after /a, the caller's sidecar has a kept connection
            async with session.get(outbound_url(caller, path), headers={"Host": "reviews"}) as reply:
                if path == "/slow":
                    assert reply.status == 504
                    assert reply.headers["x-isthmus-response-flags"] == "UT"
                else:
                    assert reply.status == 200, await reply.text()


async def test_plain_text_to_inbound_fails(make_app: Any, make_sidecar: Any) -> None:
    app = await make_app("reviews")
    server = await make_sidecar("reviews", app.port)
    port = server.listeners["inbound"].port
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{port}/") as reply:
                await reply.read()
    assert app.seen == []


async def test_tls_without_client_certificate_fails(make_app: Any, make_sidecar: Any, test_ca: Any) -> None:
    app = await make_app("reviews")
    server = await make_sidecar("reviews", app.port)
    context = ssl.create_default_context(cadata=test_ca.bundle_pem.decode())
    context.check_hostname = False
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"https://127.0.0.1:{server.listeners['inbound'].port}/", ssl=context) as r:
                await r.read()
    assert app.seen == []


async def test_authorization_deny_policy_answers_403(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app, caller, server = await mesh(make_app, make_sidecar, bus)
    deny = {
        "name": "no-productpage",
        "namespace": "default",
        "spec": {
            "action": "DENY",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/productpage"]}}]}],
        },
    }
    config = inbound_config(server, [deny])
    await bus.push(config)
    await bus.ack(server.proxy_id, config.version)
    async with aiohttp.ClientSession() as session:
        async with session.get(outbound_url(caller), headers={"Host": "reviews"}) as reply:
            assert reply.status == 403
            assert await reply.text() == "RBAC: access denied"
    assert app.seen == []


async def test_renewed_certificate_is_served_to_new_connections(make_app: Any, make_sidecar: Any) -> None:
    app = await make_app("reviews")
    server = await make_sidecar("reviews", app.port)
    client = await make_sidecar("productpage", 1)
    assert client.tls.identity is not None

    async def served_leaf() -> bytes:
        assert client.tls.identity is not None
        _, writer = await asyncio.open_connection(
            "127.0.0.1", server.listeners["inbound"].port, ssl=client_context(client.tls.identity)
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        await writer.wait_closed()
        return bytes(der)

    before = x509.load_der_x509_certificate(await served_leaf()).serial_number
    await server.certs.obtain()
    after = x509.load_der_x509_certificate(await served_leaf()).serial_number
    assert before != after
    assert server.tls.identity is not None
    current = x509.load_pem_x509_certificate(server.tls.identity.chain_pem[0]).serial_number
    assert after == current


async def test_an_app_gone_behind_kept_connections_is_503_uf(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app, caller, _ = await mesh(make_app, make_sidecar, bus)
    async with aiohttp.ClientSession() as session:
        for _ in range(3):  # after the first, both sidecars answer on kept connections
            async with session.get(outbound_url(caller, "/r"), headers={"Host": "reviews"}) as reply:
                assert reply.status == 200, await reply.text()
        await app.stop()
        async with session.get(outbound_url(caller, "/r"), headers={"Host": "reviews"}) as reply:
            assert reply.status == 503
            assert reply.headers["x-isthmus-response-flags"] == "UF"
            assert "local app unreachable" in await reply.text()
