"""Shared by the certificate tests: settings for sidecars on free ports, the caller -> mTLS -> callee configs,
and a steady request stream through the mesh path that records every failure."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from services.proxy.sidecar import Sidecar, SidecarSettings
from shared.model.proxy_config import ProxyConfig, cluster_name
from tests.integration.sidecar_settings import loopback_settings

REVIEWS = cluster_name("reviews.default.svc.cluster.local", 9080)


def sidecar_settings(state_dir: Path, service: str, app_port: int) -> SidecarSettings:
    return loopback_settings(service, app_port, state_dir)


def mesh_configs(caller: Sidecar, server: Sidecar) -> tuple[ProxyConfig, ProxyConfig]:
    """The callee (`reviews`, STRICT) and the caller (`productpage`, routing Host reviews to it over mTLS)."""
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


@dataclass
class RequestStream:
    """Two clients calling `reviews` through the caller's outbound listener until stopped: one keeps its
    connections alive, one opens a fresh connection (so a fresh mTLS handshake) for every request."""

    caller: Sidecar
    statuses: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _workers: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._run(False)), asyncio.create_task(self._run(True))]

    def check_running(self) -> None:
        """Raises if a client stopped on an exception (a failure the status list would not show)."""
        assert not any(w.done() for w in self._workers), [w.exception() for w in self._workers if w.done()]

    async def stop(self) -> None:
        self._stop.set()
        outcomes = await asyncio.gather(*self._workers, return_exceptions=True)
        assert [o for o in outcomes if o is not None] == []

    async def _run(self, fresh_connections: bool) -> None:
        connector = aiohttp.TCPConnector(force_close=fresh_connections)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20)) as session:
            url = f"http://127.0.0.1:{self.caller.listeners['outbound'].port}/"
            while not self._stop.is_set():
                async with session.get(url, headers={"Host": "reviews"}) as reply:
                    body = await reply.text()
                    self.statuses.append(reply.status)
                    if reply.status != 200:
                        self.failures.append(f"{reply.status}: {body}")
                await asyncio.sleep(0.01)
