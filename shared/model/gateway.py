"""Gateway (networking.istio.io/v1): the ports an ingress gateway listens on and the hosts it serves there.

The Isthmus subset of Istio's Gateway: `selector` (the labels of the gateway workloads it configures, in any
namespace, as in Istio; empty: every gateway), `servers` with `port` (`number`, `name`, `protocol` HTTP, HTTPS,
TCP or TLS), `hosts` (`[namespace/]dnsName`: the namespace is `*` (any, the default), `.` (the Gateway's own)
or a namespace name, and limits which namespaces' VirtualServices may bind; the dnsName is `*`, `*.suffix` or
a name), `name`, and `tls`: `httpsRedirect` on an HTTP server (every request is answered 301 to https); on an
HTTPS server `mode` SIMPLE (`serverCertificate` + `privateKey`, files on the gateway's machine) or MUTUAL (also
`caCertificates`: the client's certificate must chain to them), with `minProtocolVersion` /
`maxProtocolVersion` (TLSV1_2, TLSV1_3); on a TLS server `mode` PASSTHROUGH (routed by SNI) or SIMPLE / MUTUAL
(TLS terminated, then routed as TCP). Several HTTPS (or terminating TLS) servers on one port each bring their
certificate, chosen by the client's SNI among their hosts.

Refused, with the field's path: other protocols (MONGO, MYSQL, REDIS), `tls.mode` AUTO_PASSTHROUGH,
ISTIO_MUTUAL and OPTIONAL_MUTUAL, `credentialName`(s) (there is no secret
store: give files), `subjectAltNames`, `verifyCertificateSpki`/`Hash`, `caCrl`, `cipherSuites`, `bind`,
`defaultEndpoint`, `port.targetPort` and servers of different protocols on one port. Pilot turns Gateways and
the VirtualServices bound to them into a gateway proxy's servers (services/pilot/generate/gateway.py).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator

from shared.model.base import Spec
from shared.model.sidecar import check_dns_name, is_namespace_name

ANY_NAMESPACE = "*"
OWN_NAMESPACE = "."


def check_server_host(value: str) -> str:
    """A server host `[namespace/]dnsName`, written back as `namespace/dnsname` (namespace `*` when left out)."""
    namespace, slash, dns_name = value.partition("/")
    if not slash:
        namespace, dns_name = ANY_NAMESPACE, value
    if not namespace or not dns_name:
        raise ValueError(f"{value!r}: the namespace and the dnsName of a host entry cannot be empty")
    if namespace not in (ANY_NAMESPACE, OWN_NAMESPACE) and not is_namespace_name(namespace):
        raise ValueError(
            f"{value!r}: invalid namespace {namespace!r}: use '*' (any), '.' (the Gateway's own) or a namespace name"
        )
    dns_name = dns_name.lower()
    if dns_name != "*":
        if dns_name.startswith("*."):
            check_dns_name(dns_name[2:], value)
        elif "*" in dns_name:
            raise ValueError(f"{value!r}: a wildcard is only '*' or a leading '*.' (like *.example.com)")
        else:
            check_dns_name(dns_name, value)
    return f"{namespace}/{dns_name}"


ServerHost = Annotated[str, AfterValidator(check_server_host)]


def covered(host: str, server_host: str) -> str | None:
    """The domain a VirtualService host is served under on a server host (its dnsName): the more specific of
    the two when one covers the other, else None."""
    host = host.lower()
    if server_host == "*" or host == server_host:
        return host
    if host == "*":
        return server_host
    if server_host.startswith("*.") and host.endswith(server_host[1:]):
        return host
    if host.startswith("*.") and server_host.endswith(host[1:]):
        return server_host
    return None


class ServerProtocol(StrEnum):
    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-WEB"
    HTTPS = "HTTPS"
    TCP = "TCP"
    TLS = "TLS"


PLAIN_HTTP = frozenset({ServerProtocol.HTTP, ServerProtocol.HTTP2, ServerProtocol.GRPC, ServerProtocol.GRPC_WEB})
"""Servers of plain-text HTTP: HTTP/1.1 and HTTP/2 (with prior knowledge, as gRPC clients speak it) alike."""
_OTHER_PROTOCOLS = ("MONGO", "MYSQL", "REDIS")


class GatewayPort(Spec):
    number: Annotated[int, Field(ge=1, le=65535)]
    protocol: ServerProtocol
    name: str | None = None
    target_port: Any = None

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: Any) -> Any:
        if isinstance(value, str) and value.upper() in _OTHER_PROTOCOLS:
            raise ValueError(
                f"{value} is not supported: the gateway serves HTTP/1.1 and HTTP/2 (HTTP, HTTP2, GRPC, GRPC-WEB, "
                "HTTPS), TCP as bytes (TCP) and TLS passed through by SNI (TLS)"
            )
        return value.upper() if isinstance(value, str) else value

    @field_validator("target_port")
    @classmethod
    def _target_port(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("targetPort is not supported (deprecated in Istio): the gateway listens on `number`")
        return value


class ServerTlsMode(StrEnum):
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"
    PASSTHROUGH = "PASSTHROUGH"


TERMINATING = (ServerTlsMode.SIMPLE, ServerTlsMode.MUTUAL)

_UNSUPPORTED_MODES = {
    "AUTO_PASSTHROUGH": "it routes by SNI names of Istio's multi-network form; use PASSTHROUGH with VirtualService "
    "tls routes",
    "ISTIO_MUTUAL": "callers outside the mesh have no mesh certificate; use MUTUAL with caCertificates",
    "OPTIONAL_MUTUAL": "use SIMPLE, or MUTUAL to require a client certificate",
}


class TlsVersion(StrEnum):
    TLS_AUTO = "TLS_AUTO"
    TLSV1_2 = "TLSV1_2"
    TLSV1_3 = "TLSV1_3"


class ServerTls(Spec):
    https_redirect: bool = False
    mode: ServerTlsMode | None = None
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    min_protocol_version: TlsVersion = TlsVersion.TLS_AUTO
    max_protocol_version: TlsVersion = TlsVersion.TLS_AUTO
    credential_name: Any = None
    credential_names: Any = None
    subject_alt_names: Any = None
    verify_certificate_spki: Any = None
    verify_certificate_hash: Any = None
    cipher_suites: Any = None
    ca_crl: Any = None

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        if isinstance(value, str) and value in _UNSUPPORTED_MODES:
            raise ValueError(f"{value} is not supported: {_UNSUPPORTED_MODES[value]}")
        return value

    @field_validator("credential_name", "credential_names")
    @classmethod
    def _credential(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                "credentialName is not supported: there is no secret store on a VM; give serverCertificate and "
                "privateKey (and caCertificates for MUTUAL) as file paths on the gateway's machine"
            )
        return value

    @field_validator(
        "subject_alt_names", "verify_certificate_spki", "verify_certificate_hash", "cipher_suites", "ca_crl"
    )
    @classmethod
    def _refused(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("not supported by the Isthmus gateway")
        return value

    @model_validator(mode="after")
    def _files(self) -> ServerTls:
        if self.mode is None:
            for name, given in (
                ("serverCertificate", self.server_certificate),
                ("privateKey", self.private_key),
                ("caCertificates", self.ca_certificates),
            ):
                if given is not None:
                    raise ValueError(f"{name} needs a TLS mode: set mode SIMPLE or MUTUAL")
            return self
        if self.mode == ServerTlsMode.PASSTHROUGH:
            for name, given in (
                ("serverCertificate", self.server_certificate),
                ("privateKey", self.private_key),
                ("caCertificates", self.ca_certificates),
            ):
                if given is not None:
                    raise ValueError(f"mode PASSTHROUGH: {name} is not used (the destination terminates TLS)")
            return self
        if not self.server_certificate or not self.private_key:
            raise ValueError(f"mode {self.mode}: serverCertificate and privateKey (file paths) are required")
        if self.mode == ServerTlsMode.MUTUAL and not self.ca_certificates:
            raise ValueError("mode MUTUAL: caCertificates (a file of the CAs client certificates chain to) is required")
        if self.min_protocol_version == TlsVersion.TLSV1_3 and self.max_protocol_version == TlsVersion.TLSV1_2:
            raise ValueError("minProtocolVersion TLSV1_3 is above maxProtocolVersion TLSV1_2")
        return self


class Server(Spec):
    port: GatewayPort
    hosts: Annotated[list[ServerHost], Field(min_length=1)]
    tls: ServerTls | None = None
    name: str | None = None
    bind: Any = None
    default_endpoint: Any = None

    @field_validator("bind", "default_endpoint")
    @classmethod
    def _refused(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("not supported: the gateway listens on every address given by its --address flag")
        return value

    @model_validator(mode="after")
    def _tls_fits_protocol(self) -> Server:
        tls = self.tls
        protocol = self.port.protocol
        if tls is not None and tls.https_redirect and protocol not in PLAIN_HTTP:
            raise ValueError("tls.httpsRedirect belongs on an HTTP server (it redirects plain requests to https)")
        mode = tls.mode if tls is not None else None
        if protocol == ServerProtocol.HTTPS:
            if mode not in TERMINATING:
                raise ValueError("an HTTPS server needs tls with mode SIMPLE or MUTUAL and its certificate files")
        elif protocol == ServerProtocol.TLS:
            if mode is None:
                raise ValueError(
                    "a TLS server needs tls.mode: PASSTHROUGH (routed by SNI with VirtualService tls routes), or "
                    "SIMPLE or MUTUAL with certificate files (TLS terminated, then VirtualService tcp routes)"
                )
        elif mode is not None:
            raise ValueError(f"a {protocol} server terminates no TLS: use port.protocol HTTPS (or TLS for PASSTHROUGH)")
        return self


class GatewaySpec(Spec):
    selector: dict[str, str] = Field(default_factory=dict)
    servers: Annotated[list[Server], Field(min_length=1)]

    @model_validator(mode="after")
    def _ports(self) -> GatewaySpec:
        protocols: dict[int, ServerProtocol] = {}
        names: set[str] = set()
        for index, server in enumerate(self.servers):
            number = server.port.number
            seen = protocols.get(number)
            if seen is not None and seen != server.port.protocol:
                raise ValueError(f"servers[{index}]: port {number} is already {seen}; one port speaks one protocol")
            protocols[number] = server.port.protocol
            if server.name is not None:
                if server.name in names:
                    raise ValueError(f"servers[{index}]: server name {server.name!r} is used twice")
                names.add(server.name)
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether the Gateway configures a gateway workload with these labels (an empty selector: every one)."""
        return all(labels.get(key) == value for key, value in self.selector.items())
