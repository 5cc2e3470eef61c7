"""`isthmus analyze [-f FILE]...`: coded findings (ISM0001...) about stored config, files about to be applied,
and the Consul catalog, before any of it reaches a proxy.

Files are validated first (the same messages as `isthmus apply`; any error exits 1). Their resources are then
analyzed together with what galley stores (files win on identical names); without galley (unreachable or
`--no-galley`) the files are analyzed alone. With a reachable Consul agent the catalog checks run too
(hosts not in the catalog, principals no workload holds). Findings are warnings: the exit code is 0 unless
`--fail-on-warnings` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from services.cli.config_cmds import (
    EXIT_FAILED,
    EXIT_OK,
    GalleyRejected,
    GalleyUnreachable,
    _add_galley_flag,
    _client,
    _fail,
    _read_all,
)
from services.galley.analyze import Catalog, analyze_messages, merged_view
from services.galley.analyze_base import Workload
from services.galley.kinds import resolve_kind
from services.galley.sources import SourceError
from services.galley.validate import validate_sources
from shared.consul import (
    DEFAULT_NAMESPACE,
    META_APP_PORT,
    META_EXTRA_PORTS,
    META_GATEWAY,
    META_MESH,
    META_NAMESPACE,
    META_SERVICE_ACCOUNT,
    PROTOCOL_TCP,
    WorkloadPort,
    labels_from_meta,
    parse_extra_ports,
    protocol_of,
)
from shared.model import KINDS, Resource, parse_resource
from shared.ports import CONSUL_ADDR_ENV, DEFAULT_CONSUL_ADDR, DEFAULT_TRUST_DOMAIN, TRUST_DOMAIN_ENV

SKIPPED_SERVICES = frozenset({"consul"})


def _consul_get(addr: str, path: str) -> Any:
    base = addr if addr.startswith(("http://", "https://")) else f"http://{addr}"
    with urllib.request.urlopen(base.rstrip("/") + path, timeout=5) as reply:
        return json.loads(reply.read())


def read_catalog(addr: str) -> Catalog:
    """Service name -> namespace (Meta `namespace`, default "default"), meshed identities, TCP services
    (Meta `isthmus-protocol=tcp`, or a tcp entry in `isthmus-extra-ports`, on any instance) and the labels of
    gateway proxies, from Consul."""
    services: dict[str, str] = {}
    identities: set[tuple[str, str]] = set()
    tcp: set[str] = set()
    gateways: list[dict[str, str]] = []
    workloads: list[Workload] = []
    for name in sorted(set(_consul_get(addr, "/v1/catalog/services")) - SKIPPED_SERVICES):
        namespace = DEFAULT_NAMESPACE
        for entry in _consul_get(addr, f"/v1/catalog/service/{urllib.parse.quote(name, safe='')}"):
            meta = entry.get("ServiceMeta") or {}
            namespace = meta.get(META_NAMESPACE) or namespace
            extra = parse_extra_ports(meta.get(META_EXTRA_PORTS))
            if protocol_of(meta) == PROTOCOL_TCP or any(port.protocol == PROTOCOL_TCP for port in extra):
                tcp.add(name)
            if str(meta.get(META_MESH, "")).lower() == "true":
                identities.add((meta.get(META_NAMESPACE) or DEFAULT_NAMESPACE, meta.get(META_SERVICE_ACCOUNT) or name))
                if str(meta.get(META_GATEWAY, "")).lower() == "true":
                    gateways.append(labels_from_meta(meta))
                else:
                    workloads.append(_workload(meta, extra))
        services[name] = namespace
    return Catalog(
        services=services,
        identities=frozenset(identities),
        tcp_services=frozenset(tcp),
        gateway_labels=tuple(gateways),
        workloads=tuple(workloads),
    )


def _workload(meta: dict[str, str], extra: tuple[WorkloadPort, ...]) -> Workload:
    app_port = str(meta.get(META_APP_PORT, ""))
    ports = {int(app_port)} if app_port.isdigit() else set()
    ports.update(port.app_port for port in extra)
    return Workload(meta.get(META_NAMESPACE) or DEFAULT_NAMESPACE, labels_from_meta(meta), frozenset(ports))


def _stored(args: argparse.Namespace) -> list[Resource]:
    client = _client(args)
    resources: list[Resource] = []
    for kind in sorted(KINDS):
        for item in client.list(resolve_kind(kind)):
            item.get("metadata", {}).pop("resourceVersion", None)
            resources.append(parse_resource(item))
    return resources


def analyze_command(args: argparse.Namespace) -> int:
    batch: list[Resource] = []
    if args.filenames:
        try:
            result = validate_sources(_read_all(args.filenames))
        except SourceError as err:
            return _fail(str(err))
        if not result.ok:
            return _fail(*result.errors)
        batch = result.resources
    stored: list[Resource] = []
    if not args.no_galley:
        try:
            stored = _stored(args)
        except (GalleyUnreachable, GalleyRejected) as err:
            if not batch:
                return _fail(str(err))
            print(f"Info: stored config not included: {err}", file=sys.stderr)
    catalog: Catalog | None = None
    if not args.no_consul:
        try:
            catalog = read_catalog(args.consul_addr)
        except (OSError, ValueError) as err:
            print(f"Info: Consul at {args.consul_addr} not reachable, catalog checks skipped: {err}", file=sys.stderr)
    messages = analyze_messages(
        merged_view(batch, stored), focus=batch, catalog=catalog, trust_domain=args.trust_domain
    )
    for message in messages:
        print(f"Warning {message}")
    if not messages:
        print("No validation issues found when analyzing " + ("the given files" if batch else "the stored config"))
    return EXIT_FAILED if messages and args.fail_on_warnings else EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="find config that will not work as meant (codes ISM0001...)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-f", "--filename", dest="filenames", action="append", metavar="FILE|DIR|-")
    parser.add_argument("--no-galley", action="store_true", help="analyze the files alone")
    parser.add_argument(
        "--consul-addr",
        default=os.environ.get(CONSUL_ADDR_ENV, DEFAULT_CONSUL_ADDR),
        help=f"Consul HTTP API for the catalog checks (default ${CONSUL_ADDR_ENV} or {DEFAULT_CONSUL_ADDR})",
    )
    parser.add_argument("--no-consul", action="store_true", help="skip the catalog checks")
    parser.add_argument("--trust-domain", default=os.environ.get(TRUST_DOMAIN_ENV, DEFAULT_TRUST_DOMAIN))
    parser.add_argument("--fail-on-warnings", action="store_true", help="exit 1 when anything is found")
    _add_galley_flag(parser)
    parser.set_defaults(handler=analyze_command)
