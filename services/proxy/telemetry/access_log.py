"""Access log lines for both listeners, in Istio's default text format or JSON, written off the request path.

The request path only builds an `AccessRecord` and appends it to a bounded deque (dropping, and counting,
when the writer falls behind); a daemon thread formats and writes in batches. Istio's default text format is

    [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
    %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
    "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
    %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%"
    "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS%
    %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%

on one line; fields the proxy cannot know (upstream service time, upstream local address, SNI) are "-".
JSON lines use Istio's JSON key names (start_time, method, path, ...) and add the peers' workloads as
Istio's peer metadata objects name them: `downstream_peer` (on the destination side: the caller, from
its peer metadata or certificate) and `upstream_peer` (on the source side: the destination, from its
response metadata or the endpoint pilot sent), each {workload, namespace, identity, app, version} or null.
The text format stays Istio's default, which has no workload fields.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TextIO

from services.proxy.telemetry.labels import WorkloadLabels, peer_fields

NO_PROTOCOL = "-"
"""Envoy's %PROTOCOL% for a TCP connection."""
QUEUE_SIZE = 10_000
FLUSH_INTERVAL = 0.1
"""Seconds between the writer's batches."""

RESPONSE_CODE_DETAILS = {
    "-": "via_upstream",
    "NR": "route_not_found",
    "UH": "no_healthy_upstream",
    "UF": "upstream_reset_before_response_started{connection_failure}",
    "UT": "response_timeout",
    "FI": "fault_filter_abort",
    "RBAC": "rbac_access_denied_matched_policy[none]",
    "NC": "cluster_not_found",
    "DC": "downstream_remote_disconnect",
}


def response_code_details(flags: str) -> str:
    """Envoy's %RESPONSE_CODE_DETAILS% for our response flags (the last flag decides: URX,UF is a UF)."""
    return RESPONSE_CODE_DETAILS.get(flags.rpartition(",")[2], "-")


@dataclass(frozen=True, slots=True)
class AccessRecord:
    start_time: float
    method: str
    path: str
    protocol: str
    response_code: int
    response_flags: str
    bytes_received: int
    bytes_sent: int
    duration_ms: int
    x_forwarded_for: str
    user_agent: str
    request_id: str
    authority: str
    upstream_host: str
    upstream_cluster: str
    downstream_local_address: str
    downstream_remote_address: str
    route_name: str
    downstream_peer: WorkloadLabels | None = None
    upstream_peer: WorkloadLabels | None = None

    @property
    def failed(self) -> bool:
        """Errors-only logging keeps these: a 5xx/4xx answer, a local reply with a flag, or no answer at all;
        for a TCP connection (protocol "-", code always 0) one the proxy ended with a flag (UF, UO, NR, RBAC...)."""
        if self.protocol == NO_PROTOCOL:
            return self.response_flags != "-"
        return self.response_code >= 400 or self.response_code == 0 or self.response_flags != "-"


def _ts(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dash(value: str) -> str:
    return value or "-"


def format_text(r: AccessRecord) -> str:
    return (
        f'[{_ts(r.start_time)}] "{r.method} {r.path} {r.protocol}" {r.response_code} {r.response_flags} '
        f'{response_code_details(r.response_flags)} - "-" {r.bytes_received} {r.bytes_sent} {r.duration_ms} - '
        f'"{_dash(r.x_forwarded_for)}" "{_dash(r.user_agent)}" "{_dash(r.request_id)}" "{_dash(r.authority)}" '
        f'"{_dash(r.upstream_host)}" {_dash(r.upstream_cluster)} - {_dash(r.downstream_local_address)} '
        f"{_dash(r.downstream_remote_address)} - {_dash(r.route_name)}"
    )


def format_json(r: AccessRecord) -> str:
    body = asdict(r)
    body["start_time"] = _ts(r.start_time)
    body["response_code_details"] = response_code_details(r.response_flags)
    body["x_forwarded_for"] = r.x_forwarded_for or None
    body["downstream_peer"] = peer_fields(r.downstream_peer)
    body["upstream_peer"] = peer_fields(r.upstream_peer)
    return json.dumps(body, separators=(",", ":"))


class AccessLog:
    """A deque + writer thread; `log` never blocks and never raises.

    The request path only appends to a bounded deque (atomic under the GIL, no lock, no wake-up);
    the writer drains it in batches every FLUSH_INTERVAL, so a busy proxy pays no thread switch per line.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        json_format: bool = False,
        errors_only: bool = False,
        owns_stream: bool = False,
    ) -> None:
        """`owns_stream`: close the stream on `close` (a file the flags opened)."""
        self._stream = stream if stream is not None else sys.stdout
        self._owns_stream = owns_stream
        self._format = format_json if json_format else format_text
        self.errors_only = errors_only
        self._pending: deque[AccessRecord] = deque()
        self._limit = QUEUE_SIZE
        self._stopping = threading.Event()
        self.dropped = 0
        self._thread = threading.Thread(target=self._write_loop, name="access-log", daemon=True)
        self._thread.start()

    def log(self, record: AccessRecord) -> None:
        if self.errors_only and not record.failed:
            return
        if len(self._pending) >= self._limit:
            self.dropped += 1
            return
        self._pending.append(record)

    def _write_loop(self) -> None:
        while True:
            stopping = self._stopping.wait(FLUSH_INTERVAL)
            self._drain()
            if stopping:
                return

    def _drain(self) -> None:
        if not self._pending:
            return
        lines = []
        while self._pending:
            lines.append(self._format(self._pending.popleft()))
        try:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()
        except Exception:  # telemetry fails open: a broken stream loses lines, not requests
            self.dropped += len(lines)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the writer (blocking: call off the event loop or at exit)."""
        self._stopping.set()
        self._thread.join(timeout)
        if self._owns_stream and not self._thread.is_alive():
            self._stream.close()
