"""What pilot sends each proxy: virtual hosts with resolved routes, TCP listeners, clusters, inbound policy.

This is the contract between pilot's pure generators and the proxy's filter chain. Every host name is
already resolved to clusters, every default applied; the proxy only has to execute it.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import Field

from shared.consul import MAX_WEIGHT
from shared.model.authorization_policy import AuthorizationPolicySpec
from shared.model.base import Duration, Percent, Spec
from shared.model.destination_rule import ConnectionPoolSettings, TrafficPolicy
from shared.model.gateway import ServerProtocol, ServerTlsMode, TlsVersion
from shared.model.peer_authentication import MtlsMode
from shared.model.request_authentication import JWTRule
from shared.model.virtual_service import (
    CorsPolicy,
    Headers,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    L4MatchAttributes,
)


def cluster_name(host: str, port: int, subset: str | None = None) -> str:
    """Envoy's naming: `outbound|<port>|<subset>|<host>`."""
    return f"outbound|{port}|{subset or ''}|{host}"


class Endpoint(Spec):
    address: str
    port: Annotated[int, Field(ge=1, le=65535)]
    labels: dict[str, str] = Field(default_factory=dict)
    identity: str | None = None
    """SPIFFE URI the endpoint's sidecar must present; None means no sidecar: plain text to the app."""
    healthy: bool = True
    weight: Annotated[int, Field(ge=1, le=MAX_WEIGHT)] = 1
    """Its share of the cluster's traffic relative to the other endpoints' (lb.py)."""
    http2: bool = False
    """Its port speaks HTTP/2 (a `grpc` or `http2` port): requests reach it over HTTP/2."""


class Cluster(Spec):
    name: str
    host: str
    port: int
    subset: str | None = None
    endpoints: list[Endpoint] = Field(default_factory=list)
    traffic_policy: TrafficPolicy | None = None


class WeightedCluster(Spec):
    cluster: str
    weight: Annotated[int, Field(ge=0)] = 100
    headers: Headers | None = None


class MirrorCluster(Spec):
    cluster: str
    percentage: Percent | None = None
    """None: every request is mirrored."""


class Route(Spec):
    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    """Empty: the route matches every request."""
    route: list[WeightedCluster] = Field(default_factory=list)
    """Empty only when the route answers itself (redirect or directResponse)."""
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    rewrite: HTTPRewrite | None = None
    headers: Headers | None = None
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    cors_policy: CorsPolicy | None = None
    mirrors: list[MirrorCluster] = Field(default_factory=list)


class VirtualHost(Spec):
    name: str
    domains: list[str]
    """Host header values (lower case, with or without port) that select this virtual host."""
    routes: list[Route]


class TcpRoute(Spec):
    match: list[L4MatchAttributes] = Field(default_factory=list)
    """Empty: every connection; pilot keeps only the blocks that can apply to the listener's port and caller."""
    route: Annotated[list[WeightedCluster], Field(min_length=1)]


class SniRoute(Spec):
    """A TLS route (a gateway's PASSTHROUGH server, a sidecar's TCP listener): a client whose SNI one of
    `sni_hosts` covers goes to one of `route` (by weight), its TLS untouched."""

    sni_hosts: Annotated[list[str], Field(min_length=1)]
    """Lower case: a name, `*.suffix` (one or more labels before the suffix) or `*`."""
    route: Annotated[list[WeightedCluster], Field(min_length=1)]


class TcpListener(Spec):
    """One TCP upstream the proxy declared (`service:port`): connections to its local port follow `routes`."""

    name: str
    """`<upstream>:<port>`, as declared."""
    service: str
    """The catalog service (the declared upstream name resolved)."""
    upstream: str
    """The upstream name as the proxy declared it (one of the service's domains)."""
    port: Annotated[int, Field(ge=1, le=65535)]
    """The service port: what `match[].port` compares and the default destination port."""
    routes: Annotated[list[TcpRoute], Field(min_length=1)]
    """In order; the first whose match applies (or has none) takes the connection."""
    sni_routes: list[SniRoute] = Field(default_factory=list)
    """VirtualService `tls` routes: when there are any, the client's ClientHello is read first and the first
    route covering its SNI takes the connection; a connection none covers follows `routes`."""


class GatewayTls(Spec):
    """TLS a gateway server terminates: its certificate and key files, and for MUTUAL the client CAs' file."""

    mode: ServerTlsMode
    server_certificate: str
    private_key: str
    ca_certificates: str | None = None
    min_protocol_version: TlsVersion = TlsVersion.TLS_AUTO
    max_protocol_version: TlsVersion = TlsVersion.TLS_AUTO


class SniTls(Spec):
    """The certificate an HTTPS gateway server presents to clients whose SNI one of `hosts` covers."""

    hosts: Annotated[list[str], Field(min_length=1)]
    """Lower-case names, `*.suffix` or `*`, as the Gateway server's hosts (without namespace)."""
    tls: GatewayTls


class GatewayServer(Spec):
    """One port of a gateway proxy: every Gateway server on it merged, with the routes bound to them."""

    name: str
    """`<protocol>-<port>`, lower case (`http-8080`)."""
    port: Annotated[int, Field(ge=1, le=65535)]
    protocol: ServerProtocol
    tls: GatewayTls | None = None
    """Set exactly when the server terminates TLS (HTTPS; TLS with SIMPLE or MUTUAL): the first server's,
    presented when no `sni_tls` entry covers the client's SNI (or it sent none)."""
    sni_tls: list[SniTls] = Field(default_factory=list)
    """HTTPS: each merged server's certificate with its hosts, in order; the first covering the SNI is used."""
    virtual_hosts: list[VirtualHost] = Field(default_factory=list)
    """HTTP and HTTPS: Host header values to routes, as for a sidecar's outbound listener; clusters are the
    config's."""
    tcp_routes: list[TcpRoute] = Field(default_factory=list)
    """TCP, and TLS terminated here: in order; the first applies to every connection (pilot keeps only blocks
    for this port)."""
    sni_routes: list[SniRoute] = Field(default_factory=list)
    """TLS (PASSTHROUGH): in order; the first whose SNI names cover the client's takes the connection."""


class NamedAuthorizationPolicy(Spec):
    name: str
    namespace: str
    spec: AuthorizationPolicySpec


class NamedJwtRule(Spec):
    name: str
    """`<namespace>/<RequestAuthentication name>` the rule came from."""
    rule: JWTRule


class AppPort(Spec):
    """How the sidecar calls its app for one workload port (the applying Sidecar's ingress listener)."""

    port: Annotated[int, Field(ge=1, le=65535)]
    default_endpoint: str | None = None
    """`127.0.0.1:PORT`, `[::1]:PORT`, `0.0.0.0:PORT` or `[::]:PORT` (shared/model/sidecar.py); None: the port's own."""
    connection_pool: ConnectionPoolSettings | None = None
    """The listener's own, else the Sidecar's `inboundConnectionPool`."""


class InboundConfig(Spec):
    mtls_mode: MtlsMode = MtlsMode.PERMISSIVE
    """Resolved mode for the workload's port (never UNSET)."""
    port_level_mtls: dict[int, MtlsMode] = Field(default_factory=dict)
    """Resolved modes (never UNSET) by workload (app) port; the proxy picks its app port's entry over `mtlsMode`."""
    authorization: list[NamedAuthorizationPolicy] = Field(default_factory=list)
    jwt_rules: list[NamedJwtRule] = Field(default_factory=list)
    """RequestAuthentication rules selecting this workload, in (namespace, name) order."""
    app_ports: list[AppPort] = Field(default_factory=list)
    """The Sidecar's ingress listeners, by workload port."""
    connection_pool: ConnectionPoolSettings | None = None
    """The Sidecar's `inboundConnectionPool`: the limits on calls to the app on ports without a listener."""

    def mode_for_port(self, app_port: int) -> MtlsMode:
        return self.port_level_mtls.get(app_port, self.mtls_mode)

    def app_port(self, port: int) -> AppPort:
        """How to call the app for workload port `port` (the defaults without an ingress listener for it)."""
        found = next((entry for entry in self.app_ports if entry.port == port), None)
        return found if found is not None else AppPort(port=port, connection_pool=self.connection_pool)


_EMPTY_VERSION = b'"version":""'


class ProxyConfig(Spec):
    proxy_id: str
    service: str
    namespace: str
    version: str = ""
    virtual_hosts: list[VirtualHost] = Field(default_factory=list)
    tcp_listeners: list[TcpListener] = Field(default_factory=list)
    clusters: list[Cluster] = Field(default_factory=list)
    inbound: InboundConfig = Field(default_factory=InboundConfig)
    gateway_servers: list[GatewayServer] = Field(default_factory=list)
    """Only a gateway proxy's: the ports it listens on for traffic from outside the mesh."""

    def stamped(self) -> tuple[str, bytes]:
        """(version, JSON) in one serialization: the version is the SHA-256 of the JSON form with an empty
        version, written into that same form. Generation is deterministic (sorted inputs, labels in key order),
        so that form is canonical as it is: same input, same version, on every pilot."""
        unversioned = self if not self.version else self.model_copy(update={"version": ""})
        body = unversioned.model_dump_json(by_alias=True).encode()
        version = hashlib.sha256(body).hexdigest()[:16]
        # The top-level "version" is the first such pair: ids and names before it are strings, where quotes are
        # escaped, and every nested object comes after it.
        return version, body.replace(_EMPTY_VERSION, b'"version":"%s"' % version.encode(), 1)

    def content_hash(self) -> str:
        return self.stamped()[0]

    def versioned(self) -> ProxyConfig:
        """A copy whose version is the hash of its content (see `stamped`)."""
        return self.model_copy(update={"version": self.content_hash()})

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ProxyConfig:
        return cls.model_validate_json(data)
