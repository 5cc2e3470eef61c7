"""JWKS over HTTP: fetched once and cached, re-fetched early for an unknown key id, kept through an outage."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from multidict import CIMultiDict

from services.local.processes import free_port
from services.proxy.jwt_authn import (
    JWKS_CACHE_SECONDS,
    JWKS_MIN_REFETCH_SECONDS,
    JwksCache,
    JwtAuthenticator,
    Unauthenticated,
)
from shared.clock import FakeClock
from shared.model.proxy_config import NamedJwtRule

pytestmark = pytest.mark.integration

ISSUER = "https://idp.test"
NOW = 1_800_000_000.0


@dataclass
class KeyServer:
    keys: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)
    fetches: int = 0
    down: bool = False
    url: str = ""

    async def handle(self, _: web.Request) -> web.Response:
        self.fetches += 1
        if self.down:
            return web.Response(status=503)
        jwks = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
            jwk.update({"kid": kid, "alg": "ES256"})
            jwks.append(jwk)
        return web.json_response({"keys": jwks})

    def token(self, kid: str, **claims: Any) -> str:
        body = {"iss": ISSUER, "sub": "alice", "exp": NOW + 3600, **claims}
        return jwt.encode(body, self.keys[kid], algorithm="ES256", headers={"kid": kid})


@pytest.fixture
async def key_server() -> AsyncIterator[KeyServer]:
    server = KeyServer({"k1": ec.generate_private_key(ec.SECP256R1())})
    app = web.Application()
    app.router.add_get("/jwks", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server.url = f"http://127.0.0.1:{port}/jwks"
    yield server
    await runner.cleanup()


async def principal(auth: JwtAuthenticator, token: str) -> str | None:
    return (await auth.authenticate(CIMultiDict({"Authorization": f"Bearer {token}"}), "")).principal


async def test_key_set_cache(key_server: KeyServer) -> None:
    clock = FakeClock(NOW)
    cache = JwksCache(clock)
    rule = NamedJwtRule.model_validate({"name": "default/jwt", "rule": {"issuer": ISSUER, "jwksUri": key_server.url}})
    auth = JwtAuthenticator([rule], cache, clock)
    try:
        assert await principal(auth, key_server.token("k1")) == f"{ISSUER}/alice"
        assert await principal(auth, key_server.token("k1")) == f"{ISSUER}/alice"
        assert key_server.fetches == 1

        # a new signing key: unknown kid re-fetches, but not more often than JWKS_MIN_REFETCH_SECONDS
        key_server.keys["k2"] = ec.generate_private_key(ec.SECP256R1())
        with pytest.raises(Unauthenticated, match="signature does not verify"):
            await principal(auth, key_server.token("k2"))
        assert key_server.fetches == 1
        await clock.advance(JWKS_MIN_REFETCH_SECONDS)
        assert await principal(auth, key_server.token("k2")) == f"{ISSUER}/alice"
        assert key_server.fetches == 2

        # the key server goes down after the cache expired: the old keys stay in use
        key_server.down = True
        await clock.advance(JWKS_CACHE_SECONDS)
        assert await principal(auth, key_server.token("k1")) == f"{ISSUER}/alice"
        assert key_server.fetches == 3
    finally:
        await cache.close()


async def test_no_key_set_at_all_refuses_every_token(key_server: KeyServer) -> None:
    key_server.down = True
    clock = FakeClock(NOW)
    cache = JwksCache(clock)
    rule = NamedJwtRule.model_validate({"name": "default/jwt", "rule": {"issuer": ISSUER, "jwksUri": key_server.url}})
    try:
        with pytest.raises(Unauthenticated, match="no key set"):
            await principal(JwtAuthenticator([rule], cache, clock), key_server.token("k1"))
    finally:
        await cache.close()
