"""Telemetry of one proxied TCP connection: Istio's TCP metrics, live, and one access-log line when it closes.

Labels are Istio's standard set (labels.py) with `request_protocol="tcp"` and `response_code="0"`, as Envoy
reports TCP; `response_flags` is "-" or why the proxy ended the connection itself (NR no route, UH no
healthy endpoint, UO maxConnections reached, UF connect or TLS failure, RBAC denied). Directions follow
Istio on both reporters: `istio_tcp_received_bytes_total` counts bytes from the caller towards the
destination, `istio_tcp_sent_bytes_total` bytes back to the caller; both are counted as they pass, so a
long connection shows progress. The access-log line is Envoy's default format with method, path and
protocol "-" (`"- - -" 0`); in JSON it names the peer its labels name (`downstream_peer` on the
destination side, `upstream_peer` on the source side). A peer's workload comes from its TCP metadata block
when believed (tcp_peer_exchange.py, exchange.py's trust rule), else from the certificate (destination
side) or the endpoint pilot sent (source side). Every failure inside telemetry is counted and swallowed.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from services.proxy.telemetry.access_log import NO_PROTOCOL, AccessRecord
from services.proxy.telemetry.labels import (
    MUTUAL_TLS,
    NO_TLS,
    REPORTER_DESTINATION,
    REPORTER_SOURCE,
    UNKNOWN,
    UNKNOWN_SERVICE,
    UNKNOWN_WORKLOAD,
    WorkloadLabels,
    cluster_service_labels,
    endpoint_labels,
    peer_labels,
)
from services.proxy.telemetry.observe import Telemetry
from shared.clock import Clock
from shared.model.proxy_config import Cluster, Endpoint

log = logging.getLogger(__name__)

TCP = "tcp"
NO_CODE = "0"


def source_labels(
    telemetry: Telemetry,
    cluster: Cluster | None,
    endpoint: Endpoint | None,
    flags: str,
    callee: WorkloadLabels | None = None,
) -> tuple[str, ...]:
    """reporter=source: our workload calling the endpoint `cluster` picked (unknown parts when none was);
    `callee` is what the destination's believed metadata says of it, when it sent some."""
    destination = callee or (endpoint_labels(endpoint) if endpoint is not None else UNKNOWN_WORKLOAD)
    service = cluster_service_labels(cluster) if cluster is not None else UNKNOWN_SERVICE
    workload = telemetry.workload
    return (REPORTER_SOURCE, *workload.labels, *destination, *service, TCP, NO_CODE, "", flags, UNKNOWN)


def destination_labels(
    telemetry: Telemetry, peer: str | None, tls: bool, flags: str, caller: WorkloadLabels | None = None
) -> tuple[str, ...]:
    """reporter=destination: the caller as its believed metadata (`caller`) or else its certificate names it,
    calling our workload."""
    workload = telemetry.workload
    return (
        REPORTER_DESTINATION,
        *(caller or peer_labels(peer)),
        *workload.labels,
        *workload.service_labels,
        TCP,
        NO_CODE,
        "",
        flags,
        MUTUAL_TLS if tls else NO_TLS,
    )


class TcpMeter:
    """One connection's counters; `opened` once its labels are known, then bytes, then `closed`."""

    def __init__(self, telemetry: Telemetry, clock: Clock, downstream_remote: str, downstream_local: str) -> None:
        self._telemetry = telemetry
        self._clock = clock
        self._start = clock.monotonic()
        self._wall = clock.wall()
        self._remote = downstream_remote
        self._local = downstream_local
        self._sent: Counter | None = None
        self._received: Counter | None = None
        self._closed: Counter | None = None
        self._flags = "-"
        self._downstream_peer: WorkloadLabels | None = None
        self._upstream_peer: WorkloadLabels | None = None
        self.bytes_sent = 0
        self.bytes_received = 0

    def _guard(self, err: Exception) -> None:
        log.debug("tcp telemetry record dropped: %s", err)
        if self._telemetry.metrics is not None:
            self._telemetry.metrics.dropped.inc()

    def opened(self, labels: tuple[str, ...]) -> None:
        self._flags = labels[-2]
        if labels[0] == REPORTER_SOURCE:
            self._upstream_peer = _workload(labels[6:11])
        else:
            self._downstream_peer = _workload(labels[1:6])
        metrics = self._telemetry.metrics
        if metrics is None:
            return
        try:
            metrics.tcp_opened.labels(*labels).inc()
            self._sent = metrics.tcp_sent.labels(*labels)
            self._received = metrics.tcp_received.labels(*labels)
            self._closed = metrics.tcp_closed.labels(*labels)
        except Exception as err:
            self._guard(err)

    def received(self, count: int) -> None:
        self.bytes_received += count
        if self._received is not None:
            self._received.inc(count)

    def sent(self, count: int) -> None:
        self.bytes_sent += count
        if self._sent is not None:
            self._sent.inc(count)

    def closed(self, upstream_host: str, upstream_cluster: str) -> None:
        try:
            if self._closed is not None:
                self._closed.inc()
            access_log = self._telemetry.access_log
            if access_log is not None:
                access_log.log(self._record(upstream_host, upstream_cluster))
        except Exception as err:
            self._guard(err)

    def _record(self, upstream_host: str, upstream_cluster: str) -> AccessRecord:
        return AccessRecord(
            start_time=self._wall,
            method="-",
            path="-",
            protocol=NO_PROTOCOL,
            response_code=0,
            response_flags=self._flags,
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
            duration_ms=int((self._clock.monotonic() - self._start) * 1000.0),
            x_forwarded_for="",
            user_agent="",
            request_id="",
            authority="",
            upstream_host=upstream_host,
            upstream_cluster=upstream_cluster,
            downstream_local_address=self._local,
            downstream_remote_address=self._remote,
            route_name="-",
            downstream_peer=self._downstream_peer,
            upstream_peer=self._upstream_peer,
        )


def _workload(labels: tuple[str, ...]) -> WorkloadLabels:
    workload, namespace, principal, app, version = labels
    return (workload, namespace, principal, app, version)


def address(sockname: object) -> str:
    """`host:port` of a socket address tuple ("-" for anything else)."""
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host = f"[{sockname[0]}]" if ":" in str(sockname[0]) else str(sockname[0])
        return f"{host}:{sockname[1]}"
    return "-"
