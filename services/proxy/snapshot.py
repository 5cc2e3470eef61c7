"""One config version made executable: the route table (with its clusters) and authorizer built from a ProxyConfig."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from services.proxy.authz import Authorizer
from services.proxy.retry import policy_for
from services.proxy.router import RouteTable
from shared.model.proxy_config import ProxyConfig


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """Swapped whole on each accepted config; requests read the snapshot current when they start."""

    config: ProxyConfig
    routes: RouteTable
    authorizer: Authorizer
    servers: dict[int, ConfigSnapshot] = field(default_factory=dict)
    """A gateway proxy's: per server port, this snapshot with the server's route table."""

    @property
    def version(self) -> str:
        return self.config.version

    @classmethod
    def build(cls, config: ProxyConfig, rng: random.Random) -> ConfigSnapshot:
        """Raises ValueError naming the problem when the config cannot be executed."""
        hosts = [("virtualHosts", vhost) for vhost in config.virtual_hosts]
        hosts += [
            (f"gatewayServers[{s.name}].virtualHosts", vhost)
            for s in config.gateway_servers
            for vhost in s.virtual_hosts
        ]
        for where, vhost in hosts:
            for index, route in enumerate(vhost.routes):
                try:
                    policy_for(route.retries)
                except ValueError as err:
                    raise ValueError(f"{where}[{vhost.name}].routes[{index}]: {err}") from err
        routes = RouteTable.build(config, rng)
        authorizer = Authorizer(config.inbound.authorization)
        servers: dict[int, ConfigSnapshot] = {}
        for server in config.gateway_servers:
            try:
                table = RouteTable.of(server.virtual_hosts, routes.clusters, rng)
            except ValueError as err:
                raise ValueError(f"gatewayServers[{server.name}].{err}") from err
            servers[server.port] = cls(config, table, authorizer)
        return cls(config, routes, authorizer, servers)


class SnapshotSource(Protocol):
    """What a filter chain reads per request: the snapshot current when the request starts."""

    @property
    def snapshot(self) -> ConfigSnapshot | None: ...


class ProxyState:
    """What the listeners read per request: the current snapshot (None until the first config)."""

    def __init__(self) -> None:
        self.snapshot: ConfigSnapshot | None = None
        self._followers: list[Callable[[ConfigSnapshot], None]] = []

    def follow(self, follower: Callable[[ConfigSnapshot], None]) -> None:
        """Call `follower` with every snapshot swapped in from now on (the current one first, if any)."""
        self._followers.append(follower)
        if self.snapshot is not None:
            follower(self.snapshot)

    def swap(self, snapshot: ConfigSnapshot) -> None:
        self.snapshot = snapshot
        for follower in self._followers:
            follower(snapshot)


class ServerState:
    """A gateway server's view of the proxy's state: the current snapshot as that server's port routes it
    (None once the port is gone from the config)."""

    def __init__(self, state: ProxyState, port: int) -> None:
        self._state = state
        self._port = port

    @property
    def snapshot(self) -> ConfigSnapshot | None:
        current = self._state.snapshot
        return current.servers.get(self._port) if current is not None else None
