"""Per-cluster pool settings from connectionPool, and pools keyed by cluster and identity."""

from __future__ import annotations

from typing import Any

import aiohttp

from services.proxy.tls import TlsContexts
from services.proxy.upstream import CONNECT_TIMEOUT, IDLE_TIMEOUT, PoolSettings, UpstreamPools, _ConnectionLimits
from shared.clock import FakeClock
from shared.model.destination_rule import ConnectionPoolSettings
from shared.model.proxy_config import Endpoint


def _settings(raw: dict[str, object] | None) -> PoolSettings:
    return PoolSettings.of("c", ConnectionPoolSettings.model_validate(raw) if raw is not None else None)


def test_defaults_and_istio_fields() -> None:
    assert _settings(None) == PoolSettings("c", CONNECT_TIMEOUT, 0, IDLE_TIMEOUT, 0, 0.0)
    assert CONNECT_TIMEOUT == 10.0
    settings = _settings(
        {
            "tcp": {"maxConnections": 3, "connectTimeout": "250ms", "maxConnectionDuration": "1m"},
            "http": {"idleTimeout": "5s", "maxRequestsPerConnection": 7, "h2UpgradePolicy": "UPGRADE"},
        }
    )
    assert settings == PoolSettings("c", 0.25, 3, 5.0, 7, 60.0, h2_upgrade=True)
    meshed = Endpoint(address="10.0.0.1", port=15006, identity="spiffe://cluster.local/ns/a/sa/b")
    plain = Endpoint(address="10.0.0.2", port=8080)
    assert settings.http2(meshed) and not settings.http2(plain)  # the upgrade is sidecar to sidecar only
    assert _settings(None).http2(plain.model_copy(update={"http2": True}))  # a declared HTTP/2 port always is
    assert _settings({"http": {"maxConcurrentStreams": 5}}).max_concurrent_streams == 5
    assert _settings(None).max_concurrent_streams == 0


async def test_pools_follow_settings_and_are_closed() -> None:
    pools = UpstreamPools(TlsContexts())
    plain = Endpoint(address="127.0.0.1", port=1)
    first, ssl_arg = pools.session_for(plain, _settings({"tcp": {"maxConnections": 3, "connectTimeout": "2s"}}))
    assert ssl_arg is False
    assert first.timeout.sock_connect == 2.0
    assert isinstance(first.connector, aiohttp.TCPConnector) and first.connector.limit == 3
    again, _ = pools.session_for(plain, _settings({"tcp": {"maxConnections": 3, "connectTimeout": "2s"}}))
    assert again is first
    changed, _ = pools.session_for(plain, _settings({"tcp": {"maxConnections": 4}}))
    assert changed is not first and not first.closed  # the old pool drains
    other_cluster, _ = pools.session_for(plain, PoolSettings("d"))
    assert other_cluster is not changed
    no_keepalive, _ = pools.session_for(plain, PoolSettings("e", max_requests_per_connection=1))
    assert no_keepalive.connector is not None and no_keepalive.connector.force_close
    await pools.close()
    assert first.closed and changed.closed and other_cluster.closed


class _FakeProtocol:
    def __init__(self) -> None:
        self.closing = False

    def force_close(self) -> None:
        self.closing = True


class _FakeConnection:
    def __init__(self, protocol: _FakeProtocol) -> None:
        self.protocol = protocol


async def test_connection_limits_by_uses_and_age() -> None:
    clock = FakeClock()
    by_uses = _ConnectionLimits(3, 0.0, clock)
    protocol = _FakeProtocol()
    conn: Any = _FakeConnection(protocol)
    by_uses.count(conn)
    by_uses.count(conn)
    assert not protocol.closing
    by_uses.count(conn)
    assert protocol.closing

    by_age = _ConnectionLimits(0, 60.0, clock)
    young = _FakeProtocol()
    by_age.count(_FakeConnection(young))
    await clock.advance(59)
    by_age.count(_FakeConnection(young))
    assert not young.closing
    await clock.advance(1)
    by_age.count(_FakeConnection(young))
    assert young.closing
