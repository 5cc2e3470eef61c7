"""`isthmus proxy-config PROXY`: what one proxy runs, as routes / clusters / endpoints / inbound / certificate.

`inbound` is the side facing callers: the mTLS mode (and per app port), the AuthorizationPolicies and JWT rules
that apply, and how the app is called per port (a Sidecar ingress listener's defaultEndpoint and the limits of
its connectionPool or the Sidecar's inboundConnectionPool).

Source, best first: the proxy's own loopback admin `/config_dump` (what it really runs, plus its
certificate), found through `--admin-url` or, on the proxy's host, through the admin port its Consul
registration carries (Meta `isthmus-admin-port`); else the config pilot wrote to its key in
PROXY_CONFIG_BUCKET with the ACK it answered (what it was sent; no certificate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import nats
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError

from shared.bus.codec import Ack
from shared.bus.names import PROXY_CONFIG_BUCKET, PROXY_STATUS_BUCKET, proxy_key
from shared.consul import META_ADMIN_PORT
from shared.model.destination_rule import ConnectionPoolSettings
from shared.model.proxy_config import InboundConfig, ProxyConfig, Route
from shared.ports import CONSUL_ADDR_ENV, DEFAULT_CONSUL_ADDR, DEFAULT_NATS_URL, NATS_URL_ENV

SECTIONS = ("routes", "clusters", "endpoints", "inbound", "certificate")


@dataclass(frozen=True)
class Dump:
    source: str
    config: ProxyConfig
    certificate: dict[str, Any] | None = None
    ack: Ack | None = None


def _get_json(url: str, timeout: float = 3.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read())


def admin_url_from_consul(consul_addr: str, proxy_id: str) -> str | None:
    """http://127.0.0.1:<admin port> when the proxy's registration names one (admin is loopback only)."""
    base = consul_addr if consul_addr.startswith(("http://", "https://")) else f"http://{consul_addr}"
    try:
        services = _get_json(f"{base.rstrip('/')}/v1/agent/services")
    except (OSError, ValueError):
        return None
    entry = services.get(proxy_id) if isinstance(services, dict) else None
    port = (entry or {}).get("Meta", {}).get(META_ADMIN_PORT)
    return f"http://127.0.0.1:{port}" if port and str(port).isdigit() else None


def from_admin(url: str, proxy_id: str) -> Dump | None:
    try:
        body = _get_json(f"{url.rstrip('/')}/config_dump")
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("proxyId") != proxy_id or body.get("config") is None:
        return None
    return Dump(f"admin {url} (running)", ProxyConfig.model_validate(body["config"]), body.get("certificate"))


async def from_kv(nats_url: str, proxy_id: str) -> Dump | None:
    connection = await nats.connect(nats_url, connect_timeout=3, max_reconnect_attempts=0)
    try:
        js = connection.jetstream()
        try:
            entry = await (await js.key_value(PROXY_CONFIG_BUCKET)).get(proxy_key(proxy_id))
        except (BucketNotFoundError, KeyNotFoundError, KeyDeletedError):
            return None
        ack: Ack | None = None
        try:
            status = await (await js.key_value(PROXY_STATUS_BUCKET)).get(proxy_key(proxy_id))
            ack = Ack.from_json(status.value or b"")
        except (BucketNotFoundError, KeyNotFoundError, KeyDeletedError, ValueError):
            pass
    finally:
        await connection.close()
    return Dump(f"{PROXY_CONFIG_BUCKET} (sent by pilot)", ProxyConfig.from_json(entry.value or b""), ack=ack)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _match(route: Any) -> str:
    if not route.match:
        return "*"
    parts = []
    for match in route.match:
        fields = match.model_dump(by_alias=True, exclude_defaults=True)
        parts.append(json.dumps(fields, separators=(",", ":"), sort_keys=True))
    return " OR ".join(parts)


def _answer(route: Route) -> str:
    """What a route without destinations answers itself."""
    if route.redirect is not None:
        return f"redirect {route.redirect.redirect_code} {route.redirect.scheme or ''}".rstrip()
    if route.direct_response is not None:
        return f"direct response {route.direct_response.status}"
    return "-"


def _limits(pool: ConnectionPoolSettings | None) -> str:
    """The connection pool fields set, by their YAML names."""
    if pool is None:
        return "-"
    parts = [
        f"{part}.{name}={value}"
        for part in ("tcp", "http")
        if (settings := getattr(pool, part)) is not None
        for name, value in sorted(settings.model_dump(by_alias=True, exclude_unset=True).items())
    ]
    return ", ".join(parts) or "-"


def _inbound(inbound: InboundConfig) -> list[str]:
    ports = ", ".join(f"port {port}: {mode}" for port, mode in sorted(inbound.port_level_mtls.items()))
    lines = [f"mTLS: {inbound.mtls_mode}" + (f" ({ports})" if ports else "")]
    rows: list[tuple[str, ...]] = [("APP PORT", "CALLED AT", "LIMITS")]
    for entry in inbound.app_ports:
        rows.append((str(entry.port), entry.default_endpoint or "(the port itself)", _limits(entry.connection_pool)))
    if inbound.connection_pool is not None:
        rows.append(("(others)", "(the port itself)", _limits(inbound.connection_pool)))
    if len(rows) > 1:
        lines += _table(rows)
    policies = [f"{policy.namespace}/{policy.name}" for policy in inbound.authorization]
    lines.append(f"authorization: {', '.join(policies) or '(none)'}")
    lines.append(f"JWT rules: {', '.join(rule.name for rule in inbound.jwt_rules) or '(none)'}")
    return lines


def render(dump: Dump, sections: tuple[str, ...] = SECTIONS) -> str:
    config = dump.config
    lines = [f"proxy {config.proxy_id} ({config.service}.{config.namespace}) version {config.version}",
             f"source: {dump.source}"]  # fmt: skip
    if dump.ack is not None:
        state = "ACK" if dump.ack.accepted else f"NACK ({dump.ack.error})"
        lines.append(f"last answer: {state} for {dump.ack.version}, running {dump.ack.applied_version or '-'}")
    if "routes" in sections:
        if config.gateway_servers:
            servers: list[tuple[str, ...]] = [("GATEWAY SERVER", "PORT", "PROTOCOL", "TLS", "HOSTS")]
            for server in config.gateway_servers:
                tls = f"{server.tls.mode} {server.tls.server_certificate}" if server.tls is not None else "-"
                names = [domain for host in server.virtual_hosts for domain in host.domains]
                names += [f"sni:{name}" for route in server.sni_routes for name in route.sni_hosts]
                names += [f"tcp->{w.cluster}" for route in server.tcp_routes[:1] for w in route.route]
                hosts = ",".join(names) or "(none bound)"
                servers.append((server.name, str(server.port), server.protocol, tls, hosts))
            lines += ["", "GATEWAY SERVERS", *_table(servers)]
        rows: list[tuple[str, ...]] = [("VIRTUAL HOST", "ROUTE", "MATCH", "DESTINATIONS")]
        named = [(host.name, host) for host in config.virtual_hosts]
        named += [
            (f"{server.name}/{host.name}", host) for server in config.gateway_servers for host in server.virtual_hosts
        ]
        for name, host in named:
            for index, route in enumerate(host.routes):
                destinations = ", ".join(f"{w.cluster} {w.weight}" for w in route.route) or _answer(route)
                rows.append((name, route.name or f"#{index}", _match(route), destinations))
        lines += ["", "ROUTES", *_table(rows)]
    if "clusters" in sections:
        rows = [("CLUSTER", "ENDPOINTS", "HEALTHY", "MTLS")]
        for cluster in config.clusters:
            healthy = sum(1 for e in cluster.endpoints if e.healthy)
            meshed = sum(1 for e in cluster.endpoints if e.identity)
            mtls = "-" if not cluster.endpoints else ("yes" if meshed == len(cluster.endpoints) else f"{meshed}")
            rows.append((cluster.name, str(len(cluster.endpoints)), str(healthy), mtls))
        lines += ["", "CLUSTERS", *_table(rows)]
    if "endpoints" in sections:
        rows = [("CLUSTER", "ENDPOINT", "HEALTHY", "PROTOCOL", "IDENTITY")]
        for cluster in config.clusters:
            for endpoint in cluster.endpoints:
                address = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
                rows.append((cluster.name, f"{address}:{endpoint.port}", "yes" if endpoint.healthy else "no",
                             "HTTP/2" if endpoint.http2 else "HTTP/1.1",
                             endpoint.identity or "(plain text)"))  # fmt: skip
        lines += ["", "ENDPOINTS", *_table(rows)]
    if "inbound" in sections and not config.gateway_servers:
        lines += ["", "INBOUND", *_inbound(config.inbound)]
    if "certificate" in sections:
        lines += ["", "CERTIFICATE"]
        if dump.certificate:
            lines += _table([("SPIFFE ID", "NOT AFTER"), (str(dump.certificate.get("spiffeId")),
                                                            str(dump.certificate.get("notAfter")))])  # fmt: skip
        else:
            lines.append("(not known: the proxy's admin endpoint was not reachable)")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    admin = args.admin_url or admin_url_from_consul(args.consul_addr, args.proxy)
    dump = from_admin(admin, args.proxy) if admin else None
    if dump is None:
        try:
            dump = asyncio.run(from_kv(args.nats_url, args.proxy))
        except (OSError, nats.errors.NoServersError, TimeoutError) as err:
            print(f"error: cannot reach NATS at {args.nats_url}: {err}", file=sys.stderr)
            return 2
    if dump is None:
        print(f"error: proxy {args.proxy!r}: no admin endpoint answered and pilot has sent it no config",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.output == "json":
        body = {"source": dump.source, "config": json.loads(dump.config.to_json()), "certificate": dump.certificate}
        print(json.dumps(body, indent=2))
    else:
        print(render(dump, tuple(args.section) if args.section else SECTIONS))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "proxy-config",
        help="show what one proxy runs: routes, clusters, endpoints, inbound side, certificate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("proxy", metavar="PROXY", help="proxy id (see isthmus proxy-status)")
    parser.add_argument("--section", action="append", choices=SECTIONS, help="only this part (repeatable)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.add_argument("--admin-url", default=None, help="the proxy's admin endpoint (default: from Consul)")
    parser.add_argument("--nats-url", default=os.environ.get(NATS_URL_ENV, DEFAULT_NATS_URL))
    parser.add_argument("--consul-addr", default=os.environ.get(CONSUL_ADDR_ENV, DEFAULT_CONSUL_ADDR))
    parser.set_defaults(handler=_run)
