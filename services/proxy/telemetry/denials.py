"""Inbound security refusals as Prometheus counters, read from the inbound path's own tallies at scrape time.

The inbound handler (inbound.py, `InboundStats`) and the peeking listener (peek.py, `refused`) count what
they refuse with plain integer increments; this collector turns those counts into metric families when
Prometheus scrapes, so the request path never touches the metrics library.

  isthmus_proxy_inbound_denied_total{reason}         requests (and TCP connections) refused, by the stage
                                                     that refused them:
      rbac       AuthorizationPolicy DENY / ALLOW (403 `RBAC: access denied`; a TCP connection closed)
      ext_authz  a CUSTOM policy's external authorizer said no
      jwt        RequestAuthentication: a token that does not validate (401)
      mtls_mode  a request on a kept-alive connection whose transport the current mode no longer admits
      spiffe_id  a request over mTLS whose client certificate (chained to a trusted root) names no SPIFFE ID,
                 or one that is not spiffe://<trust-domain>/ns/<namespace>/sa/<account> (403); for a TCP
                 port the connection is closed before the peer metadata exchange
  isthmus_proxy_inbound_connections_refused_total    connections closed before any request: transport
      not admitted by the mTLS mode (plain text under STRICT, TLS under DISABLE) or a failed handshake
      (no or untrusted client certificate)

Telemetry fails open: if a tally cannot be read the family is skipped for that scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

DENIED = "isthmus_proxy_inbound_denied"
CONNECTIONS_REFUSED = "isthmus_proxy_inbound_connections_refused"


class DenialTallies(Protocol):
    """What inbound.InboundStats provides (kept structural so this module does not import the hot path)."""

    rbac_denied: int
    custom_denied: int
    jwt_rejected: int
    transport_refused: int
    spiffe_id_refused: int


def reasons(stats: DenialTallies) -> dict[str, int]:
    """Reason label -> requests refused for it."""
    return {
        "rbac": stats.rbac_denied,
        "ext_authz": stats.custom_denied,
        "jwt": stats.jwt_rejected,
        "mtls_mode": stats.transport_refused,
        "spiffe_id": stats.spiffe_id_refused,
    }


class InboundDenialCollector(Collector):
    def __init__(self, stats: Callable[[], DenialTallies], connections_refused: Callable[[], int | None]) -> None:
        self._stats = stats
        self._connections_refused = connections_refused

    def collect(self) -> Iterator[CounterMetricFamily]:
        try:
            counts = reasons(self._stats())
        except Exception as err:  # telemetry fails open: never break the scrape
            log.warning("inbound denial counts unavailable: %s", err)
        else:
            denied = CounterMetricFamily(DENIED, "Inbound requests refused, by reason", labels=["reason"])
            for reason, count in counts.items():
                denied.add_metric([reason], count)
            yield denied
        refused = self._connections_refused()
        if refused is not None:
            connections = CounterMetricFamily(
                CONNECTIONS_REFUSED, "Inbound connections closed before a request (mTLS mode or handshake)"
            )
            connections.add_metric([], refused)
            yield connections


def register(
    registry: CollectorRegistry | None,
    stats: Callable[[], DenialTallies],
    connections_refused: Callable[[], int | None],
) -> InboundDenialCollector | None:
    """Adds the collector to the sidecar's registry (None: metrics are off, nothing to do)."""
    if registry is None:
        return None
    collector = InboundDenialCollector(stats, connections_refused)
    registry.register(collector)
    return collector
