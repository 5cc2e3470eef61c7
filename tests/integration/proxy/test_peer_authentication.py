"""Inbound security over real sockets: mTLS modes on one peeked port, plain text, foreign CAs, JWT, ext-authz."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.client import Client as NatsClient

from services.local.processes import free_port
from services.proxy.enroll_in_process import InProcessEnroller
from services.proxy.sidecar import Sidecar
from services.proxy.tls import WorkloadIdentity, client_context
from shared.model.proxy_config import ProxyConfig, cluster_name
from tests.integration.proxy.conftest import TRUST_DOMAIN, CASource, ProxyBus, RecordingApp, TestCA
from tests.integration.sidecar_settings import loopback_settings

pytestmark = pytest.mark.integration

REVIEWS = cluster_name("reviews.default.svc.cluster.local", 9080)
ACK_WITHIN = 60.0
"""Generous: a loaded machine may take a while to deliver a config and its ACK."""
ISSUER = "https://idp.test"
JWT_KEY = ec.generate_private_key(ec.SECP256R1())


def server_config(sidecar: Sidecar, mode: str, **inbound: Any) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "proxyId": sidecar.proxy_id,
            "service": sidecar.settings.service,
            "namespace": "default",
            "inbound": {"mtlsMode": mode, **inbound},
        }
    ).versioned()


def caller_config(caller: Sidecar, target: Sidecar) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "proxyId": caller.proxy_id,
            "service": caller.settings.service,
            "namespace": "default",
            "virtualHosts": [
                {"name": "reviews", "domains": ["reviews"], "routes": [{"route": [{"cluster": REVIEWS}]}]}
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
                            "identity": target.settings.spiffe_id,
                        }
                    ],
                }
            ],
        }
    ).versioned()


async def apply(bus: ProxyBus, config: ProxyConfig) -> None:
    await bus.push(config)
    await bus.ack(config.proxy_id, config.version, within=ACK_WITHIN)


async def pair(make_app: Any, make_sidecar: Any, bus: ProxyBus, mode: str) -> tuple[RecordingApp, Sidecar, Sidecar]:
    app = await make_app("reviews")
    server = await make_sidecar("reviews", app.port)
    caller = await make_sidecar("productpage", 1)
    await apply(bus, server_config(server, mode))
    await apply(bus, caller_config(caller, server))
    return app, server, caller


async def via_mesh(caller: Sidecar, path: str = "/") -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{caller.listeners['outbound'].port}{path}"
        async with session.get(url, headers={"Host": "reviews"}) as reply:
            return reply.status, await reply.text()


async def plain(server: Sidecar, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.listeners['inbound'].port}{path}"
        async with session.get(url, headers=headers or {}) as reply:
            return reply.status, await reply.text()


async def plain_refused(server: Sidecar) -> bool:
    try:
        await plain(server)
    except aiohttp.ClientError:
        return True
    return False


async def test_permissive_serves_tls_and_plain_text_on_one_port(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app, server, caller = await pair(make_app, make_sidecar, bus, "PERMISSIVE")
    assert (await plain(server, "/plain", {"x-forwarded-client-cert": "By=x;URI=spiffe://forged"}))[0] == 200
    seen_plain = app.seen[-1]["headers"]
    assert "x-forwarded-client-cert" not in seen_plain
    assert seen_plain["x-forwarded-proto"] == "http"
    assert (await via_mesh(caller, "/tls"))[0] == 200
    assert app.seen[-1]["headers"]["x-forwarded-client-cert"].endswith(f"URI={caller.settings.spiffe_id}")


async def test_plain_text_callers_have_no_principal(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    _, server, caller = await pair(make_app, make_sidecar, bus, "PERMISSIVE")
    only_peers = {
        "name": "peers-only",
        "namespace": "default",
        "spec": {"rules": [{"from": [{"source": {"principals": ["*"]}}]}]},
    }
    await apply(bus, server_config(server, "PERMISSIVE", authorization=[only_peers]))
    assert await plain(server) == (403, "RBAC: access denied")
    assert (await via_mesh(caller))[0] == 200
    assert server._inbound.stats.rbac_denied == 1


async def test_mode_changes_apply_at_run_time(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app, server, caller = await pair(make_app, make_sidecar, bus, "STRICT")
    assert await plain_refused(server)
    assert (await via_mesh(caller))[0] == 200

    await apply(bus, server_config(server, "DISABLE"))
    assert (await plain(server))[0] == 200
    served = len(app.seen)
    status, _ = await via_mesh(caller)
    assert status in (403, 503)  # kept-alive mTLS connection refused, a new ClientHello closed unanswered
    assert (await via_mesh(caller))[0] == 503
    assert len(app.seen) == served

    async with aiohttp.ClientSession() as session:  # one kept-alive plain-text connection across the change
        url = f"http://127.0.0.1:{server.listeners['inbound'].port}/kept"
        async with session.get(url) as reply:
            assert reply.status == 200
        await apply(bus, server_config(server, "STRICT"))
        try:
            async with session.get(url) as reply:
                assert reply.status == 403
        except aiohttp.ClientError:
            pass  # closed: refused either way
    assert len(app.seen) == served + 1
    assert await plain_refused(server)
    assert (await via_mesh(caller))[0] == 200


async def test_port_level_mode_of_the_app_port_wins(make_app: Any, make_sidecar: Any, bus: Any) -> None:
    app, server, _ = await pair(make_app, make_sidecar, bus, "STRICT")
    other_port = app.port + 1 if app.port < 65535 else app.port - 1
    await apply(bus, server_config(server, "STRICT", portLevelMtls={str(other_port): "PERMISSIVE"}))
    assert await plain_refused(server)
    await apply(bus, server_config(server, "STRICT", portLevelMtls={str(app.port): "PERMISSIVE"}))
    assert (await plain(server))[0] == 200


def _foreign_identity(trusted: TestCA) -> WorkloadIdentity:
    """A workload certificate from another CA, trusting the mesh root so only the server side can object."""
    other = TestCA("other root")
    key = ec.generate_private_key(ec.SECP256R1())
    spiffe = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/intruder"
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]), critical=True)
        .sign(key, hashes.SHA256())
    )
    issued = other.sign(csr.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return WorkloadIdentity(spiffe, key_pem, issued.chain_pem, trusted.bundle_pem, issued.not_after)


async def test_client_certificate_from_another_ca_is_refused(
    make_app: Any, make_sidecar: Any, bus: Any, test_ca: TestCA
) -> None:
    app, server, _ = await pair(make_app, make_sidecar, bus, "PERMISSIVE")
    context = client_context(_foreign_identity(test_ca))
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession() as session:
            url = f"https://127.0.0.1:{server.listeners['inbound'].port}/"
            async with session.get(url, ssl=context) as reply:
                await reply.read()
    assert app.seen == []


@pytest.fixture
async def jwks_server() -> AsyncIterator[tuple[str, list[int]]]:
    fetches: list[int] = []
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(JWT_KEY.public_key()))
    jwk.update({"kid": "k1", "alg": "ES256"})

    async def keys(_: web.Request) -> web.Response:
        fetches.append(1)
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/jwks", keys)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/jwks", fetches
    await runner.cleanup()


def _token(**claims: Any) -> str:
    body = {"iss": ISSUER, "sub": "alice", "exp": time.time() + 600, **claims}
    return jwt.encode(body, JWT_KEY, algorithm="ES256", headers={"kid": "k1"})


async def test_request_authentication_and_claims_in_authorization(
    make_app: Any, make_sidecar: Any, bus: Any, jwks_server: tuple[str, list[int]]
) -> None:
    uri, fetches = jwks_server
    app, server, _ = await pair(make_app, make_sidecar, bus, "PERMISSIVE")
    require = {
        "name": "admins",
        "namespace": "default",
        "spec": {
            "rules": [
                {
                    "from": [{"source": {"requestPrincipals": [f"{ISSUER}/*"]}}],
                    "when": [{"key": "request.auth.claims[groups]", "values": ["admins"]}],
                }
            ]
        },
    }
    rules = [{"name": "default/jwt", "rule": {"issuer": ISSUER, "jwksUri": uri}}]
    await apply(bus, server_config(server, "PERMISSIVE", authorization=[require], jwtRules=rules))

    assert (await plain(server))[0] == 403  # no token: passes authn, no principal for authz
    assert (await plain(server, headers={"Authorization": "Bearer junk"}))[0] == 401
    user = {"Authorization": f"Bearer {_token(groups=['users'])}"}
    assert (await plain(server, headers=user))[0] == 403
    admin = {"Authorization": f"Bearer {_token(groups=['admins'])}"}
    assert (await plain(server, headers=admin))[0] == 200
    assert (await plain(server, headers=admin))[0] == 200
    assert "authorization" not in app.seen[-1]["headers"]
    assert len(fetches) == 1  # cached
    assert server._inbound.stats.jwt_rejected == 1


ExtAuthz = tuple[str, list[dict[str, str]]]


@pytest.fixture
async def ext_authz_server() -> AsyncIterator[ExtAuthz]:
    checks: list[dict[str, str]] = []

    async def check(request: web.Request) -> web.Response:
        checks.append({"path": request.path_qs, **{k.lower(): v for k, v in request.headers.items()}})
        if request.headers.get("x-let-me-in") == "yes":
            return web.Response(text="ok")
        return web.Response(status=401, text="ext-authz says no")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", check)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/check", checks
    await runner.cleanup()


@pytest.fixture
async def sidecar_with_ext_authz(
    tmp_path: Path, test_ca: TestCA, nats_client: NatsClient, ext_authz_server: ExtAuthz
) -> AsyncIterator[Callable[[int], Awaitable[Sidecar]]]:
    started: list[Sidecar] = []

    async def make(app_port: int) -> Sidecar:
        settings = loopback_settings(
            "reviews", app_port, tmp_path / "proxy-ext", ext_authz=(("opa", ext_authz_server[0]),)
        )
        sidecar = Sidecar(settings, InProcessEnroller(CASource(test_ca)), nats=nats_client, bus_trust_bundle=False)
        await sidecar.start()
        started.append(sidecar)
        return sidecar

    yield make
    for sidecar in started:
        await sidecar.stop()


async def test_custom_action_asks_the_ext_authz_provider_first(
    make_app: Any, sidecar_with_ext_authz: Any, bus: Any, ext_authz_server: ExtAuthz
) -> None:
    _, checks = ext_authz_server
    app = await make_app("reviews")
    server = await sidecar_with_ext_authz(app.port)
    custom = {
        "name": "ext",
        "namespace": "default",
        "spec": {
            "action": "CUSTOM",
            "provider": {"name": "opa"},
            "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}],
        },
    }
    unknown = {
        "name": "ext-unknown",
        "namespace": "default",
        "spec": {
            "action": "CUSTOM",
            "provider": {"name": "nobody"},
            "rules": [{"to": [{"operation": {"paths": ["/x"]}}]}],
        },
    }
    await apply(bus, server_config(server, "PERMISSIVE", authorization=[custom, unknown]))

    assert (await plain(server, "/public"))[0] == 200
    assert checks == []  # not matching the CUSTOM rule: the provider is not asked
    assert await plain(server, "/admin/a?q=1") == (401, "ext-authz says no")
    assert (await plain(server, "/admin/a", {"x-let-me-in": "yes"}))[0] == 200
    assert checks[0]["path"] == "/check/admin/a?q=1"
    assert await plain(server, "/x", {"x-let-me-in": "yes"}) == (403, "RBAC: access denied")
    assert server._inbound.stats.custom_denied == 2
