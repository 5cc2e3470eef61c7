"""The pilot's immutable view of the world: accepted resources plus Consul catalog instances, swapped whole.

Mesh rules read from the catalog (the contract with the proxy's registration):
- An instance whose Consul Meta has `isthmus-mesh=true` has a sidecar: it is a proxy. Its proxy id is Meta
  `isthmus-proxy-id` (falling back to the Consul service ID), its service the Consul service name, its
  namespace Meta `namespace` (default "default"), its service account Meta `service-account` (default
  "default"), its labels `labels_from_meta(meta)`, the services it calls Meta `isthmus-upstreams`
  (comma-separated; absent means every service). Its registered port is the sidecar's inbound (mTLS) port;
  Meta `isthmus-app-port` is the app port behind it (the key of PeerAuthentication's portLevelMtls), Meta
  `isthmus-protocol` what it speaks. Meta `isthmus-extra-ports` lists further app ports the same sidecar
  fronts, each with its own inbound port (`Instance.serving`).
- Any other instance is a plain service without sidecar, reached in plain text on its registered port.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar, cast

from services.pilot.reuse import Reuse
from shared.consul import (
    DEFAULT_NAMESPACE,
    META_APP_PORT,
    META_EXTRA_PORTS,
    META_GATEWAY,
    META_MESH,
    META_NAMESPACE,
    META_PROXY_ID,
    META_SERVICE_ACCOUNT,
    META_UPSTREAMS,
    PROTOCOL_TCP,
    labels_from_meta,
    parse_extra_ports,
    parse_upstreams,
    protocol_of,
)
from shared.model import Resource

DEFAULT_SERVICE_ACCOUNT = "default"

R = TypeVar("R", bound=Resource)
T = TypeVar("T")


@dataclass(frozen=True)
class ServedPort:
    """One port of an instance: where callers connect, the app port behind it (None: not registered) and what
    it speaks."""

    port: int
    app_port: int | None
    protocol: str


@dataclass(frozen=True)
class Instance:
    """One Consul service instance, as the health endpoint reports it."""

    service: str
    service_id: str
    node: str
    address: str
    port: int
    meta: Mapping[str, str] = field(default_factory=dict)
    healthy: bool = True
    weight: int = 1
    """Consul's `Weights.Passing` for the instance: its share of its clusters' traffic."""

    @property
    def meshed(self) -> bool:
        return self.meta.get(META_MESH, "").lower() == "true"

    @property
    def gateway(self) -> bool:
        """A gateway proxy (`--gateway`): Gateways select it by its labels; it fronts no app."""
        return self.meshed and self.meta.get(META_GATEWAY, "").lower() == "true"

    @property
    def namespace(self) -> str:
        return self.meta.get(META_NAMESPACE) or DEFAULT_NAMESPACE

    @property
    def service_account(self) -> str:
        return self.meta.get(META_SERVICE_ACCOUNT) or DEFAULT_SERVICE_ACCOUNT

    @property
    def proxy_id(self) -> str:
        return self.meta.get(META_PROXY_ID) or self.service_id

    @cached_property
    def labels(self) -> dict[str, str]:
        """Read for every endpoint of every cluster on each push: computed once per instance (do not mutate)."""
        return labels_from_meta(dict(self.meta))

    @property
    def upstreams(self) -> tuple[str, ...]:
        return parse_upstreams(self.meta.get(META_UPSTREAMS))

    @property
    def app_port(self) -> int | None:
        """The app port behind the sidecar; None when not registered (or not a number)."""
        value = self.meta.get(META_APP_PORT, "")
        return int(value) if value.isdigit() else None

    @cached_property
    def ports(self) -> tuple[ServedPort, ...]:
        """The registered port first, then the extra ports its sidecar declares (Meta `isthmus-extra-ports`;
        only a meshed instance has them, and an entry repeating the registered app port is ignored)."""
        primary = ServedPort(self.port, self.app_port, protocol_of(dict(self.meta)))
        if not self.meshed:
            return (primary,)
        extra = parse_extra_ports(self.meta.get(META_EXTRA_PORTS))
        return (
            primary,
            *(ServedPort(p.inbound_port, p.app_port, p.protocol) for p in extra if p.app_port != primary.app_port),
        )

    def serving(self, service_port: int) -> ServedPort:
        """The port that serves a cluster's `service_port`: the one whose app port it is; otherwise (HTTP
        routes' default port 80, a TCP service port that differs from the app port) the first HTTP port, or
        the registered port when none speaks HTTP. A single-port instance always answers its registered port."""
        ports = self.ports
        if len(ports) == 1:
            return ports[0]
        for served in ports:
            if served.app_port == service_port:
                return served
        return next((served for served in ports if served.protocol != PROTOCOL_TCP), ports[0])

    def sort_key(self) -> tuple[str, str, str, str, int]:
        return (self.service, self.node, self.service_id, self.address, self.port)


@dataclass(frozen=True)
class Proxy:
    """A meshed instance seen as the receiver of a generated config."""

    proxy_id: str
    service: str
    namespace: str
    service_account: str
    labels: Mapping[str, str]
    upstreams: tuple[str, ...] = ()
    """Services this proxy calls (names or any of their domains); empty: every service."""
    gateway: bool = False
    """A gateway proxy: it gets the servers of the Gateways that select it, and no sidecar part."""

    @classmethod
    def of(cls, instance: Instance) -> Proxy:
        if not instance.meshed:
            raise ValueError(f"instance {instance.service_id!r} of {instance.service!r} has no sidecar")
        return cls(
            proxy_id=instance.proxy_id,
            service=instance.service,
            namespace=instance.namespace,
            service_account=instance.service_account,
            labels=instance.labels,
            upstreams=instance.upstreams,
            gateway=instance.gateway,
        )


def _resource_key(resource: Resource) -> tuple[str, str, str]:
    return (resource.kind, resource.metadata.namespace, resource.metadata.name)


@dataclass(frozen=True)
class Snapshot:
    """Everything one generation pass reads; built from the watches' current state, never changed after."""

    resources: tuple[Resource, ...] = ()
    instances: tuple[Instance, ...] = ()
    _memo: dict[Hashable, Any] = field(default_factory=dict, compare=False, repr=False)
    reuse: Reuse = field(default_factory=Reuse, compare=False, repr=False)
    """Results of earlier snapshots' generation passes (see reuse.py); a fresh store unless given one."""

    def memoized(self, key: Hashable, compute: Callable[[], T]) -> T:
        """A value derived from this snapshot, computed once (the parts every proxy shares)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return cast(T, self._memo[key])

    @classmethod
    def build(
        cls, resources: Iterable[Resource], instances: Iterable[Instance], reuse: Reuse | None = None
    ) -> Snapshot:
        """Sort both inputs so the same state gives the same snapshot whatever order it arrived in. Snapshots
        built with the same `reuse` store share unchanged generation results."""
        return cls(
            resources=tuple(sorted(resources, key=_resource_key)),
            instances=tuple(sorted(instances, key=Instance.sort_key)),
            reuse=reuse if reuse is not None else Reuse(),
        )

    def of_kind(self, kind: type[R]) -> list[R]:
        """Resources of one kind in (namespace, name) order: one list per kind and snapshot, shared by every
        caller (read it, never change it)."""
        return self.memoized(("of_kind", kind), lambda: [r for r in self.resources if isinstance(r, kind)])

    def in_namespaces(self, kind: type[R], *namespaces: str) -> list[R]:
        """Resources of one kind in any of these namespaces, in (namespace, name) order; a lookup per namespace
        (policies that select workloads are read per proxy: scanning every namespace's would be quadratic)."""

        def index() -> dict[str, list[R]]:
            grouped: dict[str, list[R]] = {}
            for resource in self.of_kind(kind):
                grouped.setdefault(resource.metadata.namespace, []).append(resource)
            return grouped

        grouped = self.memoized(("by_namespace", kind), index)
        return [resource for namespace in sorted(set(namespaces)) for resource in grouped.get(namespace, ())]

    @cached_property
    def services(self) -> dict[str, tuple[Instance, ...]]:
        """Catalog service name -> its instances, in name order."""
        grouped: dict[str, list[Instance]] = {}
        for instance in self.instances:
            grouped.setdefault(instance.service, []).append(instance)
        return {name: tuple(grouped[name]) for name in sorted(grouped)}

    @cached_property
    def proxies(self) -> tuple[Proxy, ...]:
        """Every meshed instance as a Proxy, in proxy id order; a duplicated proxy id keeps the first."""
        seen: dict[str, Proxy] = {}
        for instance in self.instances:
            if instance.meshed and instance.proxy_id not in seen:
                seen[instance.proxy_id] = Proxy.of(instance)
        return tuple(seen[key] for key in sorted(seen))
