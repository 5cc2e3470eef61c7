"""Service discovery input for pilot: the workload registered with the local Consul agent while the proxy runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from shared.consul import (
    MESH_TAG,
    META_ADMIN_PORT,
    META_APP,
    META_APP_PORT,
    META_EXTRA_PORTS,
    META_GATEWAY,
    META_LOCALITY,
    META_MESH,
    META_NAMESPACE,
    META_PROMETHEUS_PORT,
    META_PROTOCOL,
    META_PROXY_ID,
    META_SERVICE_ACCOUNT,
    META_UPSTREAMS,
    META_VERSION,
    PROTOCOL_HTTP,
    WorkloadPort,
    extra_ports_meta,
    labels_from_meta,
)

log = logging.getLogger(__name__)

CHECK_INTERVAL = "2s"
CHECK_TIMEOUT = "1s"
DEREGISTER_CRITICAL_AFTER = "1m"
"""Consul's minimum: a workload whose checks stay critical this long disappears from the catalog."""
HEALTH_PATH = "/healthz/ready"
APP_HEALTH_PATH = "/app-health/"
"""+ the app port: the sidecar probes its app there, where the Sidecar ingress config says the app is."""


@dataclass(frozen=True, slots=True)
class Registration:
    proxy_id: str
    service: str
    namespace: str
    service_account: str
    version: str
    address: str
    inbound_port: int
    health_port: int
    app_port: int
    upstreams: tuple[str, ...] = ()
    """Services the workload calls (pilot then sends only those); empty: every service."""
    admin_port: int | None = None
    prometheus_port: int | None = None
    """The sidecar's metrics port, for Prometheus' consul_sd_configs and the dashboard."""
    protocol: str = PROTOCOL_HTTP
    """What the app's port speaks (Meta `isthmus-protocol`): callers pass TCP through as bytes."""
    extra_ports: tuple[WorkloadPort, ...] = ()
    """Further app ports and their bound inbound ports (Meta `isthmus-extra-ports`, one app check each)."""
    locality: str | None = None
    """`region/zone/subzone` (Meta `locality`, a label: callers balance by it, subsets may select on it)."""
    weight: int = 1
    """Consul's Weights.Passing: the instance's share of its service's traffic."""
    gateway: bool = False
    """A gateway proxy: Meta `isthmus-gateway`, and no app port to check."""
    labels_extra: tuple[tuple[str, str], ...] = ()
    """Further workload labels (`--label`), as Meta entries; the mesh's own keys win over them."""

    def meta(self) -> dict[str, str]:
        meta = dict(self.labels_extra)
        meta |= {
            META_MESH: "true",
            META_PROXY_ID: self.proxy_id,
            META_APP: self.service,
            META_VERSION: self.version,
            META_NAMESPACE: self.namespace,
            META_SERVICE_ACCOUNT: self.service_account,
            META_APP_PORT: str(self.app_port),
        }
        if self.gateway:
            meta[META_GATEWAY] = "true"
            del meta[META_APP_PORT]
        if self.protocol != PROTOCOL_HTTP:
            meta[META_PROTOCOL] = self.protocol
        if self.extra_ports:
            meta[META_EXTRA_PORTS] = extra_ports_meta(self.extra_ports)
        if self.locality:
            meta[META_LOCALITY] = self.locality
        if self.upstreams:
            meta[META_UPSTREAMS] = ",".join(self.upstreams)
        if self.admin_port is not None:
            meta[META_ADMIN_PORT] = str(self.admin_port)
        if self.prometheus_port is not None:
            meta[META_PROMETHEUS_PORT] = str(self.prometheus_port)
        return meta

    def labels(self) -> dict[str, str]:
        """The workload's labels as callers see them on its endpoints (its Meta less bookkeeping): what
        DestinationRule failoverPriority compares with theirs."""
        return labels_from_meta(self.meta())

    def _app_check(self, name: str, app_port: int) -> dict[str, Any]:
        """The app behind `app_port`, probed by the sidecar where its config says the app is (a Sidecar ingress
        listener's defaultEndpoint, else 127.0.0.1 and the port)."""
        return {
            "Name": name,
            "HTTP": f"http://{_host(self.address)}:{self.health_port}{APP_HEALTH_PATH}{app_port}",
            "Interval": CHECK_INTERVAL,
            "Timeout": CHECK_TIMEOUT,
            "DeregisterCriticalServiceAfter": DEREGISTER_CRITICAL_AFTER,
        }

    def definition(self) -> dict[str, Any]:
        """The body of PUT /v1/agent/service/register."""
        weights = {"Weights": {"Passing": self.weight, "Warning": 1}} if self.weight != 1 else {}
        return {
            **weights,
            "ID": self.proxy_id,
            "Name": self.service,
            "Address": self.address,
            "Port": self.inbound_port,
            "Tags": [MESH_TAG],
            "Meta": self.meta(),
            "Checks": [
                {
                    "Name": "sidecar ready",
                    "HTTP": f"http://{_host(self.address)}:{self.health_port}{HEALTH_PATH}",
                    "Interval": CHECK_INTERVAL,
                    "Timeout": CHECK_TIMEOUT,
                    "DeregisterCriticalServiceAfter": DEREGISTER_CRITICAL_AFTER,
                },
                *([] if self.gateway else [self._app_check("app port", self.app_port)]),
                *(self._app_check(f"app port {port.app_port}", port.app_port) for port in self.extra_ports),
            ],
        }


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class ConsulRegistrar:
    """Talks to the Consul agent's HTTP API (host:port)."""

    def __init__(self, consul_addr: str) -> None:
        self._base = f"http://{consul_addr}/v1/agent/service"

    async def register(self, registration: Registration) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.put(f"{self._base}/register", json=registration.definition()) as reply:
                if reply.status != 200:
                    body = await reply.text()
                    raise RuntimeError(f"consul refused registration of {registration.proxy_id}: {body.strip()}")
        log.info("registered %s in consul", registration.proxy_id)

    async def deregister(self, proxy_id: str) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.put(f"{self._base}/deregister/{proxy_id}") as reply:
                if reply.status != 200:
                    body = await reply.text()
                    raise RuntimeError(f"consul refused deregistration of {proxy_id}: {body.strip()}")
        log.info("deregistered %s from consul", proxy_id)
