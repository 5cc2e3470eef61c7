"""DestinationRule: subsets by labels and the traffic policy (load balancing, pools, outlier detection)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from shared.model.base import Duration, Spec
from shared.model.export_to import ExportTo
from shared.model.virtual_service import PortSelector


class SimpleLB(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    LEAST_CONN = "LEAST_CONN"
    RANDOM = "RANDOM"
    PASSTHROUGH = "PASSTHROUGH"


_COOKIE_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class CookieAttribute(Spec):
    """A further attribute of a generated affinity cookie (`SameSite=Strict`, `Secure`)."""

    name: str
    value: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _COOKIE_TOKEN.match(value):
            raise ValueError(f"cookie attribute name {value!r} must be a token (letters, digits, !#$%&'*+-.^_`|~)")
        return value

    @field_validator("value")
    @classmethod
    def _value(cls, value: str | None) -> str | None:
        if value is not None and any(char in value for char in ";\r\n"):
            raise ValueError(f"cookie attribute value {value!r} cannot hold ';' or a line break")
        return value


class HTTPCookie(Spec):
    name: str
    path: str | None = None
    ttl: Duration | None = None
    attributes: list[CookieAttribute] = Field(default_factory=list)
    """Added to the Set-Cookie of a generated cookie, after Path, Max-Age and HttpOnly."""


class RingHash(Spec):
    minimum_ring_size: Annotated[int, Field(ge=1)] | None = None


class MagLev(Spec):
    table_size: Annotated[int, Field(ge=1)] | None = None


class ConsistentHashLB(Spec):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    minimum_ring_size: Annotated[int, Field(ge=1)] | None = None
    """Deprecated in Istio in favour of ringHash.minimumRingSize; both work."""
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None

    @model_validator(mode="after")
    def _one_key(self) -> ConsistentHashLB:
        keys = [self.http_header_name, self.http_cookie, self.use_source_ip, self.http_query_parameter_name]
        if sum(key is not None and key is not False for key in keys) != 1:
            raise ValueError(
                "exactly one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName must be set"
            )
        sizes = [self.minimum_ring_size, self.ring_hash, self.maglev]
        if sum(size is not None for size in sizes) > 1:
            raise ValueError("set at most one of minimumRingSize, ringHash or maglev")
        return self

    def ring_size(self) -> int | None:
        if self.ring_hash is not None:
            return self.ring_hash.minimum_ring_size
        if self.maglev is not None:
            return self.maglev.table_size
        return self.minimum_ring_size


class LocalityDistribute(Spec):
    """Traffic from the caller localities `from` matches, split by weight over the localities `to` names."""

    from_: Annotated[str, Field(min_length=1, alias="from")]
    to: dict[str, Annotated[int, Field(ge=0, le=100)]]

    @field_validator("from_")
    @classmethod
    def _from_pattern(cls, value: str) -> str:
        return locality_pattern(value)

    @field_validator("to")
    @classmethod
    def _weights(cls, value: dict[str, int]) -> dict[str, int]:
        if not value:
            raise ValueError("to names at least one locality")
        for pattern in value:
            locality_pattern(pattern)
        if sum(value.values()) != 100:
            raise ValueError(f"to's weights add up to {sum(value.values())}, not 100")
        return value


class LocalityFailover(Spec):
    """When the caller's region has no healthy endpoints left, go to region `to` before any other."""

    from_: Annotated[str, Field(min_length=1, alias="from")]
    to: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _regions(self) -> LocalityFailover:
        for name, value in (("from", self.from_), ("to", self.to)):
            if "/" in value or "*" in value:
                raise ValueError(f"{name} is a region name, not {value!r}")
        if self.from_ == self.to:
            raise ValueError(f"from and to are the same region {self.to!r}")
        return self


TOPOLOGY_NETWORK = "topology.istio.io/network"
TOPOLOGY_REGION = "topology.kubernetes.io/region"
TOPOLOGY_ZONE = "topology.kubernetes.io/zone"
TOPOLOGY_SUBZONE = "topology.istio.io/subzone"
LOCALITY_KEYS = (TOPOLOGY_REGION, TOPOLOGY_ZONE, TOPOLOGY_SUBZONE)
"""failoverPriority keys that compare a part of the locality rather than a label of that name."""


class LocalityLoadBalancerSetting(Spec):
    """Istio's locality-aware load balancing: failover by locality priority (the default when the cluster
    has outlierDetection), by `failoverPriority` labels, or a weighted `distribute`; `enabled: false` turns
    them off. `failoverPriority` entries are label keys, or `key=value` to compare with that value instead of
    the caller's; as in Istio's validation, it may come with `failover` unless it names a region, zone or
    subzone key."""

    distribute: list[LocalityDistribute] = Field(default_factory=list)
    failover: list[LocalityFailover] = Field(default_factory=list)
    failover_priority: list[str] = Field(default_factory=list)
    enabled: bool | None = None

    @field_validator("failover_priority")
    @classmethod
    def _priority_labels(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for entry in value:
            key, _, override = entry.partition("=")
            if not key or key != key.strip() or "=" in override or override != override.strip():
                raise ValueError(f"failoverPriority: {entry!r} is not a label key or key=value")
            if key in seen:
                raise ValueError(f"failoverPriority: label {key!r} is listed twice")
            seen.add(key)
        return value

    @model_validator(mode="after")
    def _one_mode(self) -> LocalityLoadBalancerSetting:
        if self.distribute and self.failover:
            raise ValueError("set either distribute or failover, not both")
        if self.distribute and self.failover_priority:
            raise ValueError("set either distribute or failoverPriority, not both")
        if self.failover:
            for key, _ in self.priority_labels():
                if key in LOCALITY_KEYS:
                    raise ValueError(f"failoverPriority names {key!r}: it cannot be set together with failover")
        return self

    def priority_labels(self) -> list[tuple[str, str | None]]:
        """failoverPriority as (label key, value given in the rule or None: the caller's own value)."""
        labels: list[tuple[str, str | None]] = []
        for entry in self.failover_priority:
            key, sep, override = entry.partition("=")
            labels.append((key, override if sep else None))
        return labels


def locality_pattern(value: str) -> str:
    """`region[/zone[/subzone]]`, where a segment may be `*` (any); segments left out match any too."""
    parts = value.split("/")
    if len(parts) > 3 or any(not part or part != part.strip() for part in parts):
        raise ValueError(f"{value!r} is not a locality like 'region/zone/subzone' ('*' matches any segment)")
    return value


class WarmupConfiguration(Spec):
    """Istio's `warmup` (Envoy's slow start): a new endpoint's share of the traffic grows over `duration`."""

    duration: Duration
    minimum_percent: Annotated[float, Field(ge=0, le=100)] = 10.0
    """The share of its full weight a new endpoint starts from."""
    aggression: Annotated[float, Field(ge=1)] = 1.0
    """1: the share grows linearly; higher: it grows faster at first."""

    @field_validator("duration")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("the warmup duration must be above 0s")
        return value


WARMING_LB = frozenset({None, SimpleLB.UNSPECIFIED, SimpleLB.ROUND_ROBIN, SimpleLB.LEAST_REQUEST, SimpleLB.LEAST_CONN})
"""The balancers warmup applies to, as in Istio (ROUND_ROBIN and LEAST_REQUEST, the default)."""


class LoadBalancerSettings(Spec):
    simple: SimpleLB | None = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    warmup_duration_secs: Duration | None = None
    """Istio's older form of `warmup` (its duration, with the default minimum and aggression)."""
    warmup: WarmupConfiguration | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> LoadBalancerSettings:
        if self.simple is not None and self.consistent_hash is not None:
            raise ValueError("set either simple or consistentHash, not both")
        if self.warmup is not None and self.warmup_duration_secs is not None:
            raise ValueError("set either warmup or warmupDurationSecs, not both")
        if self.warmup_duration_secs is not None and self.warmup_duration_secs <= 0:
            raise ValueError("warmupDurationSecs must be above 0s")
        return self

    def slow_start(self) -> WarmupConfiguration | None:
        """The warmup that applies: none for RANDOM or consistentHash (Istio applies it to ROUND_ROBIN and
        LEAST_REQUEST only)."""
        if self.consistent_hash is not None or self.simple not in WARMING_LB:
            return None
        if self.warmup is not None:
            return self.warmup
        if self.warmup_duration_secs is not None:
            return WarmupConfiguration(duration=self.warmup_duration_secs)
        return None


MAX_KEEPALIVE_SECONDS = 32767
"""The longest keepalive idle time and interval Linux accepts."""


class TcpKeepalive(Spec):
    """TCP keepalive on the connections to the destination; an unset field keeps the system's value."""

    probes: Annotated[int, Field(ge=1, le=127)] | None = None
    """Unanswered probes before the connection is dropped (Linux takes 1 to 127)."""
    time: Duration | None = None
    """Idle time before the first probe."""
    interval: Duration | None = None
    """Time between probes."""

    @field_validator("time", "interval")
    @classmethod
    def _seconds_linux_takes(cls, value: float | None) -> float | None:
        if value is not None and not 1 <= value <= MAX_KEEPALIVE_SECONDS:
            raise ValueError(f"keepalive times are whole seconds from 1s to {MAX_KEEPALIVE_SECONDS}s")
        return value


class TCPSettings(Spec):
    max_connections: Annotated[int, Field(ge=1)] | None = None
    connect_timeout: Duration = 10.0
    max_connection_duration: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    idle_timeout: Duration | None = None
    """A TCP connection with no byte either way for this long is closed (unset: 1h, Istio's default; 0s: never)."""


class H2UpgradePolicy(StrEnum):
    DEFAULT = "DEFAULT"
    DO_NOT_UPGRADE = "DO_NOT_UPGRADE"
    UPGRADE = "UPGRADE"


class HTTPSettings(Spec):
    http1_max_pending_requests: Annotated[int, Field(ge=1)] | None = None
    http2_max_requests: Annotated[int, Field(ge=1)] | None = None
    max_requests_per_connection: Annotated[int, Field(ge=0)] | None = None
    max_retries: Annotated[int, Field(ge=0)] | None = None
    idle_timeout: Duration | None = None
    h2_upgrade_policy: H2UpgradePolicy | None = None
    """UPGRADE: the destination's meshed endpoints are called over HTTP/2 (sidecar to sidecar; each sidecar calls
    its app in the protocol the app's port declares). DEFAULT and DO_NOT_UPGRADE keep HTTP/1.1 for ports not
    declared http2 or grpc."""
    use_client_protocol: bool | None = None
    """Each request goes upstream in the protocol its caller used (HTTP/2 or HTTP/1.1), whatever the port
    declares; h2UpgradePolicy then has no effect."""
    max_concurrent_streams: Annotated[int, Field(ge=1)] | None = None
    """Requests in flight on one HTTP/2 connection to an endpoint; beyond it, another connection opens."""


class ConnectionPoolSettings(Spec):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Spec):
    consecutive_5xx_errors: Annotated[int, Field(ge=0, alias="consecutive5xxErrors")] = 5
    consecutive_gateway_errors: Annotated[int, Field(ge=0)] | None = None
    interval: Duration = 10.0
    base_ejection_time: Duration = 30.0
    max_ejection_percent: Annotated[int, Field(ge=0, le=100)] = 10
    min_health_percent: Annotated[int, Field(ge=0, le=100)] = 0
    split_external_local_origin_errors: bool = False
    """Count the proxy's own failures to reach the endpoint (connect failures, timeouts, resets) apart from
    its answers: they eject by `consecutiveLocalOriginFailures` and no longer count as 5xx."""
    consecutive_local_origin_failures: Annotated[int, Field(ge=0)] = 5
    """Used only with `splitExternalLocalOriginErrors` (0: local failures never eject)."""


class TLSMode(StrEnum):
    DISABLE = "DISABLE"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"
    ISTIO_MUTUAL = "ISTIO_MUTUAL"


ORIGINATION_MODES = frozenset({TLSMode.SIMPLE, TLSMode.MUTUAL})


class ClientTLSSettings(Spec):
    """How a caller's sidecar talks to the destination. Set, it overrides automatic mTLS (which follows the
    destination's PeerAuthentication): DISABLE is plain text, ISTIO_MUTUAL is mTLS with the mesh identity,
    SIMPLE originates TLS to the destination (the app sends plain HTTP to its sidecar), MUTUAL does too and
    presents `clientCertificate`/`privateKey`. As in Istio, a `tls` block without `mode` means DISABLE.

    Certificates are file paths on the proxy's machine (absolute). The server certificate is verified
    against `caCertificates` (unset: the system's trust store) and must carry one of `subjectAltNames`
    (DNS, URI or IP SAN), or without them match the SNI name (`sni`, else the cluster's host);
    `insecureSkipVerify` verifies nothing. Istio's `credentialName` and `caCrl` are refused."""

    mode: TLSMode = TLSMode.DISABLE
    sni: Annotated[str, Field(min_length=1)] | None = None
    ca_certificates: str | None = None
    client_certificate: str | None = None
    private_key: str | None = None
    subject_alt_names: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    insecure_skip_verify: bool = False
    credential_name: str | None = None
    ca_crl: str | None = None

    @field_validator("ca_certificates", "client_certificate", "private_key")
    @classmethod
    def _absolute_path(cls, path: str | None) -> str | None:
        if path is not None and not path.startswith("/"):
            raise ValueError(f"{path!r} is not an absolute file path on the proxy's machine")
        return path

    @field_validator("credential_name", "ca_crl")
    @classmethod
    def _refused(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            name = to_camel(info.field_name or "")
            raise ValueError(f"{name} is not supported: give file paths in caCertificates/clientCertificate/privateKey")
        return value

    @model_validator(mode="after")
    def _fields_fit_mode(self) -> ClientTLSSettings:
        mode = self.mode.value
        certificate = {"clientCertificate": self.client_certificate, "privateKey": self.private_key}
        for name, path in certificate.items():
            if self.mode == TLSMode.MUTUAL and path is None:
                raise ValueError(f"mode MUTUAL requires {name} (a file path on the proxy's machine)")
            if self.mode != TLSMode.MUTUAL and path is not None:
                raise ValueError(f"{name} is only used with mode MUTUAL, not {mode}")
        origination_only = {
            "sni": self.sni is not None,
            "caCertificates": self.ca_certificates is not None,
            "subjectAltNames": bool(self.subject_alt_names),
            "insecureSkipVerify": self.insecure_skip_verify,
        }
        if self.mode not in ORIGINATION_MODES:
            for name, given in origination_only.items():
                if given:
                    raise ValueError(f"{name} is only used with mode SIMPLE or MUTUAL, not {mode}")
        if self.insecure_skip_verify:
            for name in ("caCertificates", "subjectAltNames"):
                if origination_only[name]:
                    raise ValueError(f"{name} has no effect with insecureSkipVerify: true (nothing is verified)")
        return self


class PortTrafficPolicy(Spec):
    port: PortSelector
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class RetryBudget(Spec):
    """Istio's `trafficPolicy.retryBudget` (Envoy's circuit breaker retry budget): retries in flight to the
    destination are limited to `percent` of its requests in flight, never below `minRetryConcurrency`; it
    replaces `http.maxRetries`."""

    percent: Annotated[float, Field(ge=0, le=100)] = 20.0
    min_retry_concurrency: Annotated[int, Field(ge=0)] = 3


class ProxyProtocolVersion(StrEnum):
    V1 = "V1"
    V2 = "V2"


class ProxyProtocol(Spec):
    """Istio's `trafficPolicy.proxyProtocol`: connections relayed as TCP to the destination's endpoints outside
    the mesh start with a PROXY header (HAProxy's protocol) naming the caller's address and the one it
    connected to."""

    version: ProxyProtocolVersion = ProxyProtocolVersion.V1


class TrafficPolicy(Spec):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list)
    retry_budget: RetryBudget | None = None
    """Not per port (as in Istio): a port-level entry keeps the policy's budget."""
    proxy_protocol: ProxyProtocol | None = None
    """Not per port either (as in Istio)."""


class Subset(Spec):
    name: Annotated[str, Field(min_length=1)]
    labels: dict[str, str] = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(Spec):
    host: Annotated[str, Field(min_length=1)]
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = Field(default_factory=list)
    export_to: ExportTo = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_subsets(self) -> DestinationRuleSpec:
        seen: set[str] = set()
        for subset in self.subsets:
            if subset.name in seen:
                raise ValueError(f"subsets: name {subset.name!r} is defined twice")
            seen.add(subset.name)
        return self

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)
