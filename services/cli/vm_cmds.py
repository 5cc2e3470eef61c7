"""`isthmus vm bundle`: everything a VM needs to join the mesh, written to one directory.

Run on the citadel host (it reads the CA from citadel's state directory to mint the bootstrap token and to
copy the root certificate). The directory holds `mesh.env` (ISTHMUS_* addresses and the workload's identity,
readable by systemd's EnvironmentFile= and by a shell), `root-cert.pem` (the roots the sidecar trusts before
NATS answers), `token` (the bootstrap token, mode 0600, valid for --ttl) and `README`. Copy it to the VM and
run `isthmus proxy run --bundle DIR` (or the systemd unit in deploy/systemd/).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from services.citadel.ca import CertificateAuthority
from services.citadel.ca_store import CaStateError
from services.citadel.main import DEFAULT_STATE_DIR, duration_seconds
from services.citadel.tokens import create_token
from shared.arg_types import argument_type
from shared.clock import SYSTEM_CLOCK
from shared.consul import PROTOCOL_HTTP, PROTOCOLS, endpoint_weight, extra_port, upstream_specs, workload_locality
from shared.identity.spiffe import InvalidSpiffeId
from shared.ports import (
    CITADEL_ADDR_ENV,
    CONSUL_ADDR_ENV,
    DEFAULT_CITADEL_ADDR,
    DEFAULT_CONSUL_ADDR,
    DEFAULT_NATS_URL,
    NATS_URL_ENV,
    TRUST_DOMAIN_ENV,
)
from shared.vm_bundle import (
    APP_PORT_ENV,
    EXTRA_PORTS_ENV,
    LOCALITY_ENV,
    MESH_ENV,
    NAMESPACE_ENV,
    PROTOCOL_ENV,
    README,
    ROOT_CERT,
    SERVICE_ACCOUNT_ENV,
    SERVICE_ENV,
    TOKEN,
    UPSTREAMS_ENV,
    VERSION_ENV,
    WEIGHT_ENV,
    format_env,
)

DEFAULT_TOKEN_TTL = "720h"


def _write(path: Path, data: str | bytes, mode: int) -> None:
    """Create the file with its final mode from the start (a token is never readable by others, even briefly)."""
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
    os.chmod(path, mode)


def write_bundle(args: argparse.Namespace) -> Path:
    ca = CertificateAuthority.load(args.citadel_state)
    token = create_token(ca, args.namespace, args.service_account, args.ttl, SYSTEM_CLOCK)
    out: Path = args.out or Path(f"{args.service}-{args.namespace}-bundle")
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    values = {
        NATS_URL_ENV: args.nats_url,
        CONSUL_ADDR_ENV: args.consul_addr,
        CITADEL_ADDR_ENV: args.citadel_addr,
        TRUST_DOMAIN_ENV: ca.trust_domain,
        SERVICE_ENV: args.service,
        NAMESPACE_ENV: args.namespace,
        SERVICE_ACCOUNT_ENV: args.service_account,
        VERSION_ENV: args.version,
        APP_PORT_ENV: str(args.port),
    }
    upstreams = upstream_specs(",".join(args.upstreams))
    if upstreams:
        values[UPSTREAMS_ENV] = ",".join(upstreams)
    if args.protocol != PROTOCOL_HTTP:
        values[PROTOCOL_ENV] = args.protocol
    if args.locality:
        values[LOCALITY_ENV] = args.locality
    if args.weight != 1:
        values[WEIGHT_ENV] = str(args.weight)
    if args.extra_ports:
        values[EXTRA_PORTS_ENV] = ",".join(f"{p.app_port}:{p.protocol}:{p.inbound_port}" for p in args.extra_ports)
    _write(out / MESH_ENV, format_env(values), 0o644)
    _write(out / ROOT_CERT, ca.trust_bundle_pem(), 0o644)
    _write(out / TOKEN, token + "\n", 0o600)
    _write(
        out / README,
        f"Isthmus VM bundle for {args.service} (namespace {args.namespace}, service account "
        f"{args.service_account}): copy this directory to the VM and run `isthmus proxy run --bundle <dir>` "
        "(or deploy/systemd/isthmus-sidecar.service); the token is good for one workload identity until it "
        "expires.\n",
        0o644,
    )
    return out


def _repeated_app_port(args: argparse.Namespace) -> int | None:
    seen = {args.port}
    for port in args.extra_ports:
        if port.app_port in seen:
            return int(port.app_port)
        seen.add(port.app_port)
    return None


def bundle_command(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        print(f"isthmus vm bundle: --port {args.port} is not a port (1-65535)", file=sys.stderr)
        return 1
    repeated = _repeated_app_port(args)
    if repeated is not None:
        print(f"isthmus vm bundle: --extra-port: app port {repeated} is fronted twice", file=sys.stderr)
        return 1
    try:
        out = write_bundle(args)
    except (CaStateError, InvalidSpiffeId, ValueError) as err:
        print(f"isthmus vm bundle: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"isthmus vm bundle: {err.filename}: {err.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {out}/ ({MESH_ENV}, {ROOT_CERT}, {TOKEN}, {README})")
    return 0


def register(subparsers: Any) -> None:
    vm = subparsers.add_parser("vm", help="onboard virtual machines")
    commands = vm.add_subparsers(title="vm commands", metavar="COMMAND")
    bundle = commands.add_parser(
        "bundle",
        help="write the directory a VM needs to join the mesh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bundle.add_argument("--service", required=True)
    bundle.add_argument("--namespace", required=True)
    bundle.add_argument("--service-account", required=True)
    bundle.add_argument("--port", type=int, required=True, help="the app's port on the VM's 127.0.0.1")
    bundle.add_argument("--version", default="v1", help="workload version label (default %(default)s)")
    bundle.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=PROTOCOL_HTTP,
        help="what the app's port speaks: http (default: HTTP/1.1), http2 or grpc (HTTP/2 without TLS) or tcp "
        "(passed through as bytes)",
    )
    bundle.add_argument(
        "--extra-port",
        dest="extra_ports",
        action="append",
        type=argument_type(extra_port),
        default=[],
        metavar="APP_PORT[:PROTOCOL[:INBOUND_PORT]]",
        help="a further app port the sidecar fronts (repeatable), as `isthmus proxy run --extra-port`",
    )
    bundle.add_argument(
        "--locality",
        type=argument_type(workload_locality),
        default=None,
        metavar="REGION[/ZONE[/SUBZONE]]",
        help="where the VM runs, as `isthmus proxy run --locality`",
    )
    bundle.add_argument(
        "--weight",
        type=argument_type(endpoint_weight),
        default=1,
        metavar="N",
        help="the VM's share of its service's traffic, as `isthmus proxy run --weight`",
    )
    bundle.add_argument(
        "--upstream", dest="upstreams", action="append", default=[], metavar="SERVICE[:PORT[:LOCALPORT]]"
    )
    bundle.add_argument("--out", type=Path, default=None, help="directory (default <service>-<namespace>-bundle)")
    bundle.add_argument("--citadel-state", type=Path, default=Path(DEFAULT_STATE_DIR), help="citadel's state dir")
    bundle.add_argument(
        "--ttl", type=duration_seconds, default=duration_seconds(DEFAULT_TOKEN_TTL), help="token lifetime (720h)"
    )
    bundle.add_argument("--nats-url", default=os.environ.get(NATS_URL_ENV, DEFAULT_NATS_URL))
    bundle.add_argument(
        "--consul-addr",
        default=DEFAULT_CONSUL_ADDR,
        help="the Consul agent as the VM reaches it (default %(default)s: a local client agent)",
    )
    bundle.add_argument("--citadel-addr", default=os.environ.get(CITADEL_ADDR_ENV, DEFAULT_CITADEL_ADDR))
    bundle.set_defaults(handler=bundle_command)
    vm.set_defaults(handler=lambda args: (vm.print_help(), 2)[1])
