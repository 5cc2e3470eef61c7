"""Command line of the sidecar: flags -> settings, NATS, citadel enroller, then the Sidecar until a signal."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import uvloop
from nats.aio.client import Client as NatsClient

from services.proxy.citadel_source import CitadelEnroller
from services.proxy.ext_authz import parse_providers
from services.proxy.sidecar import TRUST_BUNDLE_FILE, Sidecar, SidecarSettings
from services.proxy.telemetry import flags as telemetry_flags
from shared import ports, vm_bundle
from shared.arg_types import argument_type
from shared.clock import SYSTEM_CLOCK
from shared.consul import (
    DEFAULT_NAMESPACE,
    PROTOCOL_HTTP,
    PROTOCOLS,
    WorkloadPort,
    endpoint_weight,
    extra_port,
    upstream_specs,
    workload_locality,
)

log = logging.getLogger("services.proxy")


class _Default(str):
    """A flag value nobody typed (a default, maybe from the environment): a --bundle value may replace it."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="a directory written by `isthmus vm bundle`: its mesh.env, token and root-cert.pem supply every "
        "flag not given explicitly",
    )
    parser.add_argument("--service", default=None, help="service name this sidecar fronts (required without --bundle)")
    parser.add_argument("--namespace", default=_Default(DEFAULT_NAMESPACE))
    parser.add_argument("--service-account", default=None, help="defaults to the service name")
    parser.add_argument("--version", default=_Default("v1"), help="workload version label")
    parser.add_argument(
        "--app-port", type=int, default=None, help="the app's port on 127.0.0.1 (required without --bundle)"
    )
    parser.add_argument("--address", default="127.0.0.1", help="address other sidecars reach us on")
    parser.add_argument("--inbound-port", type=int, default=ports.PROXY_INBOUND)
    parser.add_argument("--outbound-port", type=int, default=ports.PROXY_OUTBOUND)
    parser.add_argument("--admin-port", type=int, default=ports.PROXY_ADMIN)
    parser.add_argument(
        "--health-port",
        type=int,
        default=ports.PROXY_HEALTH,
        help="Consul's checks: GET /healthz/ready (the sidecar) and GET /app-health/<app port> (the app, probed "
        "where the config's Sidecar ingress says it listens)",
    )
    parser.add_argument("--nats-url", default=_Default(os.environ.get(ports.NATS_URL_ENV, ports.DEFAULT_NATS_URL)))
    parser.add_argument(
        "--consul-addr", default=_Default(os.environ.get(ports.CONSUL_ADDR_ENV, ports.DEFAULT_CONSUL_ADDR))
    )
    parser.add_argument(
        "--citadel-addr", default=_Default(os.environ.get(ports.CITADEL_ADDR_ENV, ports.DEFAULT_CITADEL_ADDR))
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", default=None, help="bootstrap token for the first certificate")
    token.add_argument("--token-file", type=Path, default=None, help="file holding the bootstrap token")
    parser.add_argument(
        "--trust-domain", default=_Default(os.environ.get(ports.TRUST_DOMAIN_ENV, ports.DEFAULT_TRUST_DOMAIN))
    )
    parser.add_argument("--state-dir", type=Path, default=None, help="default .isthmus/proxy-<service>")
    parser.add_argument(
        "--ext-authz",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="HTTP ext-authz provider that CUSTOM AuthorizationPolicies name (repeatable)",
    )
    telemetry_flags.add_arguments(parser)
    parser.add_argument(
        "--upstream",
        dest="upstreams",
        action="append",
        default=[],
        metavar="SERVICE[:PORT[:LOCALPORT]]",
        help="a service the app calls (repeatable); pilot then sends only those. None: every service. With a "
        "PORT the service is reached as TCP on 127.0.0.1:LOCALPORT (default PORT) when it is declared TCP",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=_Default(PROTOCOL_HTTP),
        help="what the app's port speaks: http (default: HTTP/1.1), http2 or grpc (HTTP/2 without TLS: the sidecar "
        "calls the app, and callers' sidecars call this one, over HTTP/2) or tcp (passed through as bytes, never "
        "parsed)",
    )
    parser.add_argument(
        "--extra-port",
        dest="extra_ports",
        action="append",
        type=argument_type(extra_port),
        default=[],
        metavar="APP_PORT[:PROTOCOL[:INBOUND_PORT]]",
        help="a further app port on 127.0.0.1 this sidecar fronts (repeatable): PROTOCOL http (default), http2, "
        "grpc or tcp, served on its own mTLS inbound port INBOUND_PORT (default 0: any free port), announced in "
        "Consul Meta isthmus-extra-ports; callers reach a tcp one as --upstream SERVICE:APP_PORT",
    )
    parser.add_argument(
        "--locality",
        type=argument_type(workload_locality),
        default=None,
        metavar="REGION[/ZONE[/SUBZONE]]",
        help="where this workload runs (Consul Meta locality); with outlierDetection on a cluster, calls go to "
        "endpoints in the same subzone, zone, then region first (DestinationRule localityLbSetting)",
    )
    parser.add_argument(
        "--weight",
        type=argument_type(endpoint_weight),
        default=None,
        metavar="N",
        help="this workload's share of its service's traffic relative to the other instances' (Consul "
        "Weights.Passing; default 1): a VM twice the size of the others takes --weight 2",
    )

    parser.add_argument(
        "--gateway",
        action="store_true",
        help="run as an ingress gateway: no app (--app-port is not needed), no inbound or outbound listener; it "
        "listens on the ports of the Gateways whose selector its labels meet and routes by the VirtualServices "
        "bound to them, calling the mesh over mTLS. Without --label it has the label istio=ingressgateway",
    )
    parser.add_argument(
        "--gateway-bind",
        default=None,
        metavar="ADDRESS",
        help="with --gateway: the address its servers listen on (0.0.0.0: every IPv4 interface, :: every one); "
        "default --address",
    )
    parser.add_argument(
        "--label",
        dest="labels",
        action="append",
        type=argument_type(workload_label),
        default=[],
        metavar="KEY=VALUE",
        help="a further workload label (repeatable), registered as Consul Meta: subsets and Gateway selectors match it",
    )


GATEWAY_LABEL = ("istio", "ingressgateway")
"""The label of a gateway without --label: what Istio's default ingress gateway carries."""
_OWN_LABELS = ("app", "version", "namespace", "service-account", "locality")


def workload_label(value: str) -> tuple[str, str]:
    """`KEY=VALUE` -> (key, value); ValueError names what is wrong."""
    key, sep, label = value.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"{value!r} is not KEY=VALUE")
    if key in _OWN_LABELS or key.startswith("isthmus-"):
        raise ValueError(f"{key!r} is set by the proxy itself (--service, --version, --namespace, ...)")
    return key, label.strip()


_BUNDLE_FLAGS = {
    "nats_url": ports.NATS_URL_ENV,
    "consul_addr": ports.CONSUL_ADDR_ENV,
    "citadel_addr": ports.CITADEL_ADDR_ENV,
    "trust_domain": ports.TRUST_DOMAIN_ENV,
    "namespace": vm_bundle.NAMESPACE_ENV,
    "version": vm_bundle.VERSION_ENV,
    "service": vm_bundle.SERVICE_ENV,
    "service_account": vm_bundle.SERVICE_ACCOUNT_ENV,
    "protocol": vm_bundle.PROTOCOL_ENV,
    "locality": vm_bundle.LOCALITY_ENV,
}


def apply_bundle(args: argparse.Namespace) -> None:
    """Fill every flag not given explicitly from --bundle; seed the state dir's trust bundle with its roots."""
    bundle: Path | None = getattr(args, "bundle", None)
    if bundle is None:
        return
    values = vm_bundle.read_env(bundle)
    for flag, key in _BUNDLE_FLAGS.items():
        current = getattr(args, flag)
        if key in values and (current is None or isinstance(current, _Default)):
            setattr(args, flag, values[key])
    if values.get(vm_bundle.PROTOCOL_ENV, PROTOCOL_HTTP) not in PROTOCOLS:
        raise vm_bundle.BundleError(
            f"{bundle / vm_bundle.MESH_ENV}: {vm_bundle.PROTOCOL_ENV} is not one of {', '.join(PROTOCOLS)}"
        )
    if values.get(vm_bundle.LOCALITY_ENV):
        try:
            workload_locality(values[vm_bundle.LOCALITY_ENV])
        except ValueError as err:
            raise vm_bundle.BundleError(f"{bundle / vm_bundle.MESH_ENV}: {vm_bundle.LOCALITY_ENV}: {err}") from err
    if getattr(args, "weight", None) is None and values.get(vm_bundle.WEIGHT_ENV):
        try:
            args.weight = endpoint_weight(values[vm_bundle.WEIGHT_ENV])
        except ValueError as err:
            raise vm_bundle.BundleError(f"{bundle / vm_bundle.MESH_ENV}: {vm_bundle.WEIGHT_ENV}: {err}") from err
    if args.app_port is None and vm_bundle.APP_PORT_ENV in values:
        if not values[vm_bundle.APP_PORT_ENV].isdigit():
            raise vm_bundle.BundleError(f"{bundle / vm_bundle.MESH_ENV}: {vm_bundle.APP_PORT_ENV} is not a port")
        args.app_port = int(values[vm_bundle.APP_PORT_ENV])
    if not args.extra_ports and values.get(vm_bundle.EXTRA_PORTS_ENV):
        try:
            args.extra_ports = [extra_port(part) for part in values[vm_bundle.EXTRA_PORTS_ENV].split(",") if part]
        except ValueError as err:
            raise vm_bundle.BundleError(f"{bundle / vm_bundle.MESH_ENV}: {vm_bundle.EXTRA_PORTS_ENV}: {err}") from err
    if not args.upstreams and values.get(vm_bundle.UPSTREAMS_ENV):
        args.upstreams = [values[vm_bundle.UPSTREAMS_ENV]]
    if args.token is None and args.token_file is None:
        args.token_file = bundle / vm_bundle.TOKEN
    if args.state_dir is None:
        args.state_dir = bundle / "state"
    roots = bundle / vm_bundle.ROOT_CERT
    seeded = args.state_dir / TRUST_BUNDLE_FILE
    if not seeded.exists():
        try:
            pem = roots.read_bytes()
            args.state_dir.mkdir(parents=True, exist_ok=True)
            seeded.write_bytes(pem)
        except OSError as err:
            raise vm_bundle.BundleError(f"--bundle {bundle}: {vm_bundle.ROOT_CERT}: {err.strerror or err}") from err


def settings_from(args: argparse.Namespace) -> SidecarSettings:
    if args.service is None:
        raise ValueError("--service is required (or --bundle DIR)")
    gateway = bool(getattr(args, "gateway", False))
    if getattr(args, "gateway_bind", None) and not gateway:
        raise ValueError("--gateway-bind needs --gateway")
    if args.app_port is None and not gateway:
        raise ValueError("--app-port is required (or --bundle DIR, or --gateway)")
    for flag in ("app_port", "inbound_port", "outbound_port", "admin_port", "health_port"):
        value = getattr(args, flag)
        if value is None and flag == "app_port":
            continue
        if not 1 <= value <= 65535:
            raise ValueError(f"--{flag.replace('_', '-')} {value} is not a port (1-65535)")
    extra_ports = tuple(getattr(args, "extra_ports", None) or [])
    _check_extra_ports(args, extra_ports)
    return SidecarSettings(
        service=args.service,
        namespace=args.namespace,
        service_account=args.service_account,
        version=args.version,
        app_port=args.app_port or 0,
        address=args.address,
        inbound_port=args.inbound_port,
        outbound_port=args.outbound_port,
        admin_port=args.admin_port,
        health_port=args.health_port,
        trust_domain=args.trust_domain,
        state_dir=args.state_dir or Path(f".isthmus/proxy-{args.service}"),
        ext_authz=tuple(parse_providers(getattr(args, "ext_authz", None) or []).items()),
        telemetry=telemetry_flags.settings_from(args),
        upstreams=upstream_specs(",".join(getattr(args, "upstreams", None) or [])),
        protocol=str(getattr(args, "protocol", PROTOCOL_HTTP)),
        extra_ports=extra_ports,
        locality=getattr(args, "locality", None),
        weight=getattr(args, "weight", None) or 1,
        gateway=gateway,
        gateway_bind=getattr(args, "gateway_bind", None),
        labels=tuple(getattr(args, "labels", None) or ([GATEWAY_LABEL] if gateway else [])),
    )


def _check_extra_ports(args: argparse.Namespace, extra_ports: tuple[WorkloadPort, ...]) -> None:
    """Each app port fronted once, and each inbound port bound once; raises ValueError naming the flags."""
    app_ports = {args.app_port: "--app-port"}
    bound = {
        getattr(args, flag): f"--{flag.replace('_', '-')}"
        for flag in ("health_port", "admin_port", "outbound_port", "inbound_port", "prometheus_port")
        if getattr(args, flag, None)
    }
    for port in extra_ports:
        value = f"--extra-port {port.app_port}:{port.protocol}" + (f":{port.inbound_port}" if port.inbound_port else "")
        if port.app_port in app_ports:
            raise ValueError(f"{value}: app port {port.app_port} is already fronted ({app_ports[port.app_port]})")
        app_ports[port.app_port] = "--extra-port"
        if port.inbound_port in bound:
            raise ValueError(f"{value}: inbound port {port.inbound_port} is already taken ({bound[port.inbound_port]})")
        if port.inbound_port:
            bound[port.inbound_port] = "--extra-port"


def read_token(args: argparse.Namespace) -> str | None:
    if args.token_file is not None:
        try:
            return str(args.token_file.read_text()).strip() or None
        except OSError as err:
            raise ValueError(f"--token-file {args.token_file}: {err.strerror}") from err
    token: str | None = args.token
    return token


async def connect_bus(
    url: str,
    name: str,
    first_try_only: bool = False,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> NatsClient | None:
    """Connect to NATS (reconnecting forever once connected); retries the first connect unless told not to.

    nats-py retries an initial connect forever when reconnects are unlimited (and max_reconnect_attempts
    times even without reconnects), so `first_try_only` first probes the server with a connection allowed
    two quick attempts (a sidecar must start from its files while NATS is down).
    """
    backoff = 0.5
    while True:
        try:
            if first_try_only:
                probe = await nats.connect(
                    url,
                    name=name,
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.1,
                    connect_timeout=2,
                )
                await probe.close()
            connection: NatsClient = await nats.connect(
                url,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                connect_timeout=2,
                reconnected_cb=on_reconnect,
            )
            return connection
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if first_try_only:
                log.warning("NATS at %s unreachable (%s); starting from the files in the state dir", url, err)
                return None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


async def serve(args: argparse.Namespace) -> int:
    apply_bundle(args)
    settings = settings_from(args)
    token = read_token(args)
    built: list[Sidecar] = []

    async def reconnected() -> None:
        if built:
            await built[0].config.resync()

    connection = await connect_bus(args.nats_url, settings.proxy_id, first_try_only=True, on_reconnect=reconnected)
    sidecar = _build(settings, args, token, connection)
    built.append(sidecar)
    late: asyncio.Task[None] | None = None
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await sidecar.start()
        if connection is None:
            late = asyncio.create_task(_attach_when_reachable(sidecar, args.nats_url, reconnected))
        ready = asyncio.create_task(sidecar.wait_ready())
        await stop.wait()
        ready.cancel()
        return 0
    finally:
        if late is not None:
            late.cancel()
        await sidecar.stop()
        bus = sidecar.bus
        if bus is not None:
            await bus.close()


async def _attach_when_reachable(sidecar: Sidecar, url: str, on_reconnect: Callable[[], Awaitable[None]]) -> None:
    connection = await connect_bus(url, sidecar.proxy_id, on_reconnect=on_reconnect)
    assert connection is not None
    sidecar.attach_bus(connection)
    log.info("connected to NATS at %s", url)


def _build(
    settings: SidecarSettings,
    args: argparse.Namespace,
    token: str | None,
    connection: NatsClient | None,
) -> Sidecar:
    holder: list[Sidecar] = []

    def trust_bundle() -> bytes:
        identity = holder[0].tls.identity if holder else None
        if identity is not None:
            return identity.trust_bundle_pem
        override = holder[0].certs.trust_bundle_override if holder else None
        if override:
            return override
        raise RuntimeError("no trust bundle in NATS yet: cannot verify citadel")

    enroller = CitadelEnroller(args.citadel_addr, trust_bundle, token, SYSTEM_CLOCK)
    sidecar = Sidecar(settings, enroller, nats=connection, consul_addr=args.consul_addr)
    holder.append(sidecar)
    return sidecar


def run(args: argparse.Namespace) -> int:
    """Blocking entry point: runs the sidecar on uvloop until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(uvloop.run(serve(args)))
    except ValueError as err:
        log.error("%s", err)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="isthmus-proxy", description="Isthmus sidecar proxy")
    add_arguments(parser)
    return run(parser.parse_args(argv))
