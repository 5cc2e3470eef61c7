"""The assembled proxy: trust bundle -> certificate -> listeners -> Consul registration -> config watch, and back."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient

from services.proxy.admin import Readiness, admin_handler, health_handler
from services.proxy.app_side import AppCallSettings, probe
from services.proxy.certs import CertificateManager, Enroller
from services.proxy.config_watch import ConfigWatcher
from services.proxy.ext_authz import ExtAuthzClient
from services.proxy.extra_ports import ExtraInbound, ExtraPortServices, start_extra_inbound
from services.proxy.gateway import GatewayListeners
from services.proxy.inbound import InboundHandler, InboundStats
from services.proxy.listeners import Listener, start_listener
from services.proxy.outbound import OutboundHandler
from services.proxy.peek import start_peeking_listener
from services.proxy.registration import ConsulRegistrar, Registration
from services.proxy.snapshot import ProxyState
from services.proxy.tcp_inbound import TcpInbound
from services.proxy.tcp_outbound import TcpOutbound
from services.proxy.telemetry import setup as telemetry_setup
from services.proxy.telemetry.context import ObservedPools
from services.proxy.telemetry.denials import register as register_denials
from services.proxy.telemetry.labels import Workload
from services.proxy.telemetry.metrics import ProxyHealthCollector
from services.proxy.tls import TlsContexts, WorkloadIdentity
from services.proxy.trust_bundle import follow_trust_bundle, read_trust_bundle
from shared.clock import SYSTEM_CLOCK, Clock
from shared.consul import HTTP2_PROTOCOLS, PROTOCOL_HTTP, PROTOCOL_TCP, WorkloadPort, parse_tcp_upstreams, proxy_id_for
from shared.identity.spiffe import SpiffeId
from shared.tasks import cancel_until_done

log = logging.getLogger(__name__)

TRUST_BUNDLE_FILE = "trust-bundle.pem"
BOOTSTRAP_RETRY_MAX = 30.0


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    service: str
    app_port: int
    namespace: str = "default"
    service_account: str | None = None
    version: str = "v1"
    address: str = "127.0.0.1"
    inbound_port: int = 15006
    outbound_port: int = 15001
    admin_port: int = 15000
    health_port: int = 15021
    trust_domain: str = "cluster.local"
    state_dir: Path = Path(".isthmus/proxy")
    host: str | None = None
    """Node name in the proxy id; None means this machine's hostname."""
    telemetry: telemetry_setup.TelemetrySettings = field(default_factory=telemetry_setup.TelemetrySettings)
    upstreams: tuple[str, ...] = ()
    """Services the app calls (`--upstream`); pilot then sends only those. Empty: every service."""
    ext_authz: tuple[tuple[str, str], ...] = ()
    """(provider name, base URL) pairs CUSTOM AuthorizationPolicies may name."""
    protocol: str = PROTOCOL_HTTP
    """What the app's port speaks: "tcp" passes inbound connections to it as bytes (`--protocol`)."""
    extra_ports: tuple[WorkloadPort, ...] = ()
    """Further app ports this sidecar fronts, each behind its own inbound listener (`--extra-port`)."""
    locality: str | None = None
    """`region/zone/subzone` where the workload runs (`--locality`): Consul Meta and locality-aware balancing."""
    weight: int = 1
    """This instance's share of its service's traffic (`--weight`: Consul's Weights.Passing)."""
    gateway: bool = False
    """A gateway proxy (`--gateway`): no app, no inbound or outbound listener; it listens on the ports of the
    Gateways whose selector its labels meet."""
    labels: tuple[tuple[str, str], ...] = ()
    """Further workload labels (`--label KEY=VALUE`), registered as Consul Meta."""
    gateway_bind: str | None = None
    """Where a gateway's servers listen (`--gateway-bind`, e.g. 0.0.0.0); None: `address`."""

    @property
    def account(self) -> str:
        return self.service_account or self.service

    @property
    def spiffe_id(self) -> str:
        return SpiffeId(self.trust_domain, self.namespace, self.account).uri

    @property
    def proxy_id(self) -> str:
        return proxy_id_for(self.service, self.namespace, self.inbound_port, self.host)


class Sidecar:
    """Owns every part of one proxy; `start` brings it up in dependency order, `stop` takes it down."""

    def __init__(
        self,
        settings: SidecarSettings,
        enroller: Enroller,
        nats: NatsClient | None = None,
        consul_addr: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        bus_trust_bundle: bool = True,
    ) -> None:
        """`enroller`: citadel_source.CitadelEnroller in production, enroll_in_process.InProcessEnroller in tests.
        `bus_trust_bundle=False`: trust only the roots the enroller returns (tests with their own CA)."""
        self.settings = settings
        self._bus_bundle = bus_trust_bundle
        self.proxy_id = settings.proxy_id
        self._nats = nats
        self._clock = clock
        rng = rng or random.Random()
        self._rng = rng
        self.state = ProxyState()
        self.tls = TlsContexts()
        self.certs = CertificateManager(settings.spiffe_id, enroller, clock, rng, self._use_identity)
        self.config = ConfigWatcher(self.proxy_id, self.state, settings.state_dir, clock, rng)
        self.readiness = Readiness(self.state, self.tls)
        self._pools = ObservedPools(self.tls)
        self._outbound: OutboundHandler | None = None
        self.telemetry = self._telemetry()
        self._inbound = InboundHandler(
            self.state,
            self.tls,
            settings.app_port,
            settings.inbound_port,
            clock,
            ExtAuthzClient(dict(settings.ext_authz)),
            settings.protocol in HTTP2_PROTOCOLS,
            settings.address,
        )
        self.listeners: dict[str, Listener] = {}
        self.extra_inbound: list[ExtraInbound] = []
        self.labels = self.registration().labels()
        """This workload's own labels, as its endpoints show them (failoverPriority compares them)."""
        self.tcp_outbound = TcpOutbound(
            self.state,
            self.tls,
            self.telemetry,
            parse_tcp_upstreams(",".join(settings.upstreams)),
            clock,
            rng,
            settings.locality,
            self.labels,
        )
        self.gateway = (
            GatewayListeners(
                self.state,
                self._pools,
                self.telemetry,
                settings.gateway_bind or settings.address,
                clock,
                rng,
                settings.locality,
                self.labels,
                ExtAuthzClient(dict(settings.ext_authz)),
                self.tcp_outbound,
            )
            if settings.gateway
            else None
        )
        self._tcp_inbound = (
            TcpInbound(
                self.state, self.tls, settings.app_port, settings.inbound_port, self.telemetry, clock, settings.address
            )
            if settings.protocol == PROTOCOL_TCP
            else None
        )
        self._registrar = ConsulRegistrar(consul_addr) if consul_addr else None
        self._registered = False
        self._tasks: list[asyncio.Task[None]] = []
        metrics = self.telemetry.metrics
        register_denials(metrics.registry if metrics else None, self._denials, self._connections_refused)

    def _denials(self) -> InboundStats:
        """Requests (HTTP) and connections (TCP) refused on every inbound listener, the primary's and the extra
        ports'; a gateway's, those its servers refused."""
        if self.gateway is not None:
            return self.gateway.stats
        handlers = [self._inbound, *(extra.http for extra in self.extra_inbound if extra.http is not None)]
        tcp = [self._tcp_inbound] if self._tcp_inbound is not None else []
        tcp += [extra.tcp for extra in self.extra_inbound if extra.tcp is not None]
        if len(handlers) == 1 and not tcp:
            return self._inbound.stats
        total = InboundStats()
        for handler in handlers:
            for tally in fields(InboundStats):
                setattr(total, tally.name, getattr(total, tally.name) + getattr(handler.stats, tally.name))
        for tcp_inbound in tcp:
            total.rbac_denied += tcp_inbound.stats.rbac_denied
            total.spiffe_id_refused += tcp_inbound.stats.spiffe_id_refused
        return total

    def _connections_refused(self) -> int | None:
        primary: int | None = getattr(self.listeners.get("inbound"), "refused", None)
        if primary is None or not self.extra_inbound:
            return primary
        return primary + sum(extra.listener.refused for extra in self.extra_inbound)

    def registration(self) -> Registration:
        s = self.settings
        return Registration(
            proxy_id=self.proxy_id,
            service=s.service,
            namespace=s.namespace,
            service_account=s.account,
            version=s.version,
            address=s.address,
            inbound_port=self.listeners["inbound"].port if "inbound" in self.listeners else s.inbound_port,
            health_port=self.listeners["health"].port if "health" in self.listeners else s.health_port,
            app_port=s.app_port,
            upstreams=s.upstreams,
            admin_port=self.listeners["admin"].port if "admin" in self.listeners else s.admin_port,
            prometheus_port=self.listeners["prometheus"].port if "prometheus" in self.listeners else None,
            protocol=s.protocol,
            extra_ports=tuple(extra.port for extra in self.extra_inbound),
            locality=s.locality,
            weight=s.weight,
            gateway=s.gateway,
            labels_extra=s.labels,
        )

    def _telemetry(self) -> telemetry_setup.Telemetry:
        s = self.settings
        health = ProxyHealthCollector(
            self.proxy_id,
            lambda: self.state.snapshot.version if self.state.snapshot is not None else None,
            lambda: self.tls.identity.not_after if self.tls.identity is not None else None,
            lambda: {
                name: telemetry_setup.open_connections(listener) for name, listener in self.every_listener().items()
            },
            self.cluster_states,
        )
        workload = Workload(s.service, s.namespace, s.version, s.spiffe_id)
        return telemetry_setup.build(s.telemetry, workload, self.state, self.proxy_id, health, self._clock)

    def every_listener(self) -> dict[str, Listener]:
        """The fixed listeners and a gateway's server listeners."""
        if self.gateway is None:
            return self.listeners
        return {**self.listeners, **self.gateway.listeners}

    def cluster_states(self) -> dict[str, dict[str, object]]:
        """The outbound clusters' live state (requests in flight, pending, retries, ejected endpoints), as the
        isthmus_proxy_cluster_* gauges report it."""
        return self._outbound.clusters.describe() if self._outbound is not None else {}

    def _outbound_handler(self) -> OutboundHandler:
        self._outbound = OutboundHandler(
            self.state, self._pools, self._clock, self._rng, self.settings.locality, self.labels
        )
        return self._outbound

    @property
    def _inbound_observed(self) -> telemetry_setup.Handler:
        s = self.settings
        return self.telemetry.inbound(self._inbound, s.inbound_port, s.app_port)

    async def _start_prometheus(self) -> None:
        """The metrics listener; a port that cannot be bound costs the metrics, never the proxy."""
        port = self.settings.telemetry.prometheus_port
        if port is None or self.telemetry.metrics is None:
            return
        handler = telemetry_setup.prometheus_handler(self.telemetry.metrics.registry)
        try:
            self.listeners["prometheus"] = await start_listener("prometheus", handler, self.settings.address, port)
        except OSError as err:
            log.warning("no metrics endpoint: prometheus port %s: %s", port, err)

    async def _start_extra_inbound(self) -> None:
        s = self.settings
        services = ExtraPortServices(self.state, self.tls, self.telemetry, self._clock, s.ext_authz)
        for port in s.extra_ports:
            extra = await start_extra_inbound(port, s.address, services)
            self.extra_inbound.append(extra)
            self.listeners[extra.name] = extra.listener

    @property
    def trust_bundle_path(self) -> Path:
        return self.settings.state_dir / TRUST_BUNDLE_FILE

    def _use_identity(self, identity: WorkloadIdentity) -> None:
        """Swap the TLS contexts, then remember the roots (public data) for a start without the bus."""
        self.tls.update(identity)
        try:
            self.settings.state_dir.mkdir(parents=True, exist_ok=True)
            self.trust_bundle_path.write_bytes(identity.trust_bundle_pem)
        except OSError as err:
            log.warning("could not persist the trust bundle: %s", err)

    async def _bus_trust_bundle(self) -> bytes | None:
        if self._nats is None or not self._bus_bundle:
            return None
        try:
            return await read_trust_bundle(self._nats.jetstream())
        except Exception as err:  # the bus being down must not stop a start from the disk copy
            log.warning("trust bundle not readable from NATS: %s", err)
            return None

    async def _bootstrap_identity(self) -> None:
        """Trust bundle (bus, else the copy on disk), then the first certificate; retried until it works."""
        backoff = 0.5
        while True:
            try:
                bundle = await self._bus_trust_bundle()
                if bundle is None and self._bus_bundle and self.trust_bundle_path.is_file():
                    bundle = self.trust_bundle_path.read_bytes()
                if bundle is not None:
                    self.certs.trust_bundle_override = bundle
                await self.certs.obtain()
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("no workload certificate yet (%s); retrying in %.1fs", err, backoff)
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, BOOTSTRAP_RETRY_MAX)

    def _probe_app(self, port: int) -> Awaitable[str | None] | None:
        """Consul's app check of a workload port this sidecar fronts: the app probed where the current config's
        Sidecar ingress says it is (127.0.0.1 and the port without one); None for any other port."""
        s = self.settings
        if s.gateway or (port != s.app_port and all(extra.app_port != port for extra in s.extra_ports)):
            return None
        snapshot = self.state.snapshot
        return probe(AppCallSettings.current(snapshot.config if snapshot is not None else None, port, s.address))

    async def start(self) -> None:
        s = self.settings
        await self._bootstrap_identity()
        self.config.load_last_known_good()
        self.listeners["health"] = await start_listener(
            "health", health_handler(self.readiness, self._probe_app), s.address, s.health_port
        )
        self.listeners["admin"] = await start_listener(
            "admin",
            admin_handler(self.proxy_id, self.state, self.tls, self.readiness),
            "127.0.0.1",
            s.admin_port,
        )
        if self.gateway is not None:
            await self._start_gateway()
        else:
            await self._start_sidecar_listeners()
        await self._start_prometheus()
        if self._registrar is not None:
            await self._registrar.register(self.registration())
            self._registered = True
        self._spawn(self.certs.run(), "certificate renewal")
        if self._nats is not None:
            self._follow_bus(self._nats)
        if self.gateway is None:
            log.info("proxy %s listening (inbound %s)", self.proxy_id, self.listeners["inbound"].port)
        else:
            log.info("gateway %s started: it listens on the ports of the Gateways that select it", self.proxy_id)

    async def _start_gateway(self) -> None:
        assert self.gateway is not None, "a gateway proxy has its gateway listeners"
        self.gateway.start()

    async def _start_sidecar_listeners(self) -> None:
        s = self.settings
        outbound = self._outbound_handler()
        self.listeners["outbound"] = await start_listener(
            "outbound",
            self.telemetry.outbound(outbound),
            "127.0.0.1",
            s.outbound_port,
            pass_through=True,
            immediate=self.telemetry.outbound_immediate(outbound.immediate),
        )
        self.listeners["inbound"] = await start_peeking_listener(
            "inbound",
            self._inbound_observed,
            s.address,
            s.inbound_port,
            self.tls.listener_context,
            self._inbound.mtls_mode,
            self._tcp_inbound,
            self.telemetry.inbound_immediate(self._inbound.immediate, s.inbound_port, s.app_port),
        )
        await self._start_extra_inbound()
        await self.tcp_outbound.start()

    @property
    def bus(self) -> NatsClient | None:
        return self._nats

    def attach_bus(self, nats: NatsClient) -> None:
        """Start following config and trust bundle on a connection made after `start` (NATS was down)."""
        if self._nats is not None:
            raise RuntimeError("the sidecar already follows the bus")
        self._nats = nats
        self._follow_bus(nats)

    def _follow_bus(self, nats: NatsClient) -> None:
        js = nats.jetstream()
        self._spawn(self.config.run(js, nats), "config watch")
        if self._bus_bundle:
            self._spawn(follow_trust_bundle(js, self.certs.update_trust_bundle, self._clock, nats), "trust bundle")

    async def wait_ready(self) -> None:
        """Returns once a certificate and a config are in place."""
        await self.config.applied.wait()
        log.info("proxy %s ready", self.proxy_id)

    def _spawn(self, job: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.create_task(job, name=f"{self.proxy_id} {what}")
        task.add_done_callback(_log_crash)
        self._tasks.append(task)

    async def stop(self) -> None:
        """Deregister first (so callers stop picking us), then close listeners and pools."""
        if self._registrar is not None and self._registered:
            try:
                await self._registrar.deregister(self.proxy_id)
            except Exception as err:  # the critical-check timeout removes us anyway
                log.warning("deregistration failed: %s", err)
            self._registered = False
        await cancel_until_done(self._tasks)
        self._tasks.clear()
        if self.gateway is not None:
            await self.gateway.close()
        for listener in self.listeners.values():
            await listener.close()
        self.listeners.clear()
        await self.tcp_outbound.close()
        await self._pools.close()
        await telemetry_setup.close(self.telemetry)
        await self._inbound.close()
        for extra in self.extra_inbound:
            await extra.close()
        self.extra_inbound.clear()


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %s", task.get_name(), task.exception())
