"""One config version made executable: the route table (with its clusters) and authorizer built from a ProxyConfig."""

from __future__ import annotations

import random
from dataclasses import dataclass

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

    @property
    def version(self) -> str:
        return self.config.version

    @classmethod
    def build(cls, config: ProxyConfig, rng: random.Random) -> ConfigSnapshot:
        """Raises ValueError naming the problem when the config cannot be executed."""
        for vhost in config.virtual_hosts:
            for index, route in enumerate(vhost.routes):
                try:
                    policy_for(route.retries)
                except ValueError as err:
                    raise ValueError(f"virtualHosts[{vhost.name}].routes[{index}]: {err}") from err
        return cls(
            config=config,
            routes=RouteTable.build(config, rng),
            authorizer=Authorizer(config.inbound.authorization),
        )


class ProxyState:
    """What the listeners read per request: the current snapshot (None until the first config)."""

    def __init__(self) -> None:
        self.snapshot: ConfigSnapshot | None = None

    def swap(self, snapshot: ConfigSnapshot) -> None:
        self.snapshot = snapshot
