"""A one-service outbound config for proxy integration tests ("catalog" on real upstream ports), pushed and ACKed."""

from __future__ import annotations

from typing import Any

from services.proxy.sidecar import Sidecar
from shared.model.proxy_config import ProxyConfig, cluster_name

CATALOG = cluster_name("catalog.default.svc.cluster.local", 80)


def catalog_config(
    sidecar: Sidecar,
    ports: list[int],
    policy: dict[str, Any] | None = None,
    route_extra: dict[str, Any] | None = None,
    weights: list[int] | None = None,
) -> ProxyConfig:
    """`catalog` routed to one cluster whose endpoints are `ports` on loopback (with these `weights`), with this
    traffic policy."""
    return ProxyConfig.model_validate(
        {
            "proxyId": sidecar.proxy_id,
            "service": sidecar.settings.service,
            "namespace": "default",
            "virtualHosts": [
                {
                    "name": "catalog",
                    "domains": ["catalog"],
                    "routes": [{"route": [{"cluster": CATALOG}], **(route_extra or {})}],
                }
            ],
            "clusters": [
                {
                    "name": CATALOG,
                    "host": "catalog.default.svc.cluster.local",
                    "port": 80,
                    "endpoints": [
                        {"address": "127.0.0.1", "port": port, "weight": weight}
                        for port, weight in zip(ports, weights or [1] * len(ports), strict=True)
                    ],
                    "trafficPolicy": policy,
                }
            ],
        }
    ).versioned()


async def apply(bus: Any, cfg: ProxyConfig) -> None:
    await bus.push(cfg)
    ack = await bus.ack(cfg.proxy_id, cfg.version)
    assert ack.accepted, ack.error
