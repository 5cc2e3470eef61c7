"""Short-lived certificates from a real citadel rotate under a steady request stream without a single error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NatsClient

from services.citadel.ca import CertificateAuthority, TtlPolicy
from services.citadel.server import CitadelServer
from services.citadel.tokens import create_token
from services.local.processes import free_port
from services.proxy.citadel_source import CitadelSource
from services.proxy.sidecar import Sidecar, SidecarSettings
from shared.clock import SYSTEM_CLOCK
from shared.model.proxy_config import ProxyConfig, cluster_name
from tests.integration.proxy.conftest import TRUST_DOMAIN, ProxyBus

pytestmark = pytest.mark.integration

TTL_SECONDS = 4
ROTATIONS = 3
DEADLINE = 90.0
REVIEWS = cluster_name("reviews.default.svc.cluster.local", 9080)
ACK_WITHIN = 60.0
"""Generous: a loaded machine may take a while to deliver a config and its ACK."""


@pytest.fixture
async def citadel(tmp_path: Path) -> AsyncIterator[tuple[CertificateAuthority, str]]:
    ca = CertificateAuthority.load_or_create(
        tmp_path / "citadel", TRUST_DOMAIN, ttl=TtlPolicy(default_seconds=TTL_SECONDS, max_seconds=TTL_SECONDS)
    )
    server = CitadelServer(ca)
    port = await server.start("127.0.0.1:0")
    yield ca, f"127.0.0.1:{port}"
    await server.stop(0)


@pytest.fixture
async def citadel_sidecar(
    tmp_path: Path, nats_client: NatsClient, citadel: tuple[CertificateAuthority, str]
) -> AsyncIterator[Callable[[str, int], Awaitable[Sidecar]]]:
    ca, address = citadel
    started: list[tuple[Sidecar, CitadelSource]] = []

    async def make(service: str, app_port: int) -> Sidecar:
        settings = SidecarSettings(
            service=service,
            app_port=app_port,
            inbound_port=free_port(),
            outbound_port=free_port(),
            admin_port=free_port(),
            health_port=free_port(),
            trust_domain=TRUST_DOMAIN,
            state_dir=tmp_path / f"proxy-{service}",
            host=f"test{time.monotonic_ns()}",
        )
        holder: list[Sidecar] = []
        token = create_token(ca, "default", service, 600, SYSTEM_CLOCK)
        source = CitadelSource(
            address,
            ca.trust_bundle_pem,
            token,
            lambda: holder[0].tls.identity if holder else None,
            SYSTEM_CLOCK,
        )
        sidecar = Sidecar(settings, source, nats=nats_client, bus_trust_bundle=False)
        holder.append(sidecar)
        await sidecar.start()
        started.append((sidecar, source))
        return sidecar

    yield make
    for sidecar, source in started:
        await sidecar.stop()
        await source.close()


def _configs(caller: Sidecar, server: Sidecar) -> tuple[ProxyConfig, ProxyConfig]:
    inbound = ProxyConfig.model_validate(
        {
            "proxyId": server.proxy_id,
            "service": "reviews",
            "namespace": "default",
            "inbound": {"mtlsMode": "STRICT"},
        }
    ).versioned()
    outbound = ProxyConfig.model_validate(
        {
            "proxyId": caller.proxy_id,
            "service": "productpage",
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
                            "port": server.listeners["inbound"].port,
                            "identity": server.settings.spiffe_id,
                        }
                    ],
                }
            ],
        }
    ).versioned()
    return inbound, outbound


async def test_rotation_under_load_loses_no_request(make_app: Any, citadel_sidecar: Any, bus: ProxyBus) -> None:
    app = await make_app("reviews")
    server = await citadel_sidecar("reviews", app.port)
    caller = await citadel_sidecar("productpage", 1)
    for config in _configs(caller, server):
        await bus.push(config)
        await bus.ack(config.proxy_id, config.version, within=ACK_WITHIN)

    statuses: list[int] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def stream(fresh_connections: bool) -> None:
        connector = aiohttp.TCPConnector(force_close=fresh_connections)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20)) as session:
            url = f"http://127.0.0.1:{caller.listeners['outbound'].port}/"
            while not stop.is_set():
                async with session.get(url, headers={"Host": "reviews"}) as reply:
                    body = await reply.text()
                    statuses.append(reply.status)
                    if reply.status != 200:
                        failures.append(f"{reply.status}: {body}")
                await asyncio.sleep(0.01)

    workers = [asyncio.create_task(stream(False)), asyncio.create_task(stream(True))]
    deadline = time.monotonic() + DEADLINE
    try:
        while min(server.certs.renewals, caller.certs.renewals) < ROTATIONS:
            assert time.monotonic() < deadline, (server.certs.renewals, caller.certs.renewals, failures[:3])
            assert not any(w.done() for w in workers), [w.exception() for w in workers if w.done()]
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        outcomes = await asyncio.gather(*workers, return_exceptions=True)
    assert [o for o in outcomes if o is not None] == []
    assert failures == []
    assert len(statuses) > 2 * ROTATIONS
    assert app.seen[-1]["headers"]["x-forwarded-client-cert"].endswith(f"URI={caller.settings.spiffe_id}")
