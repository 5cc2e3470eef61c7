"""The inbound denial collector: tallies -> counter families at scrape time, failing open."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from services.proxy.inbound import InboundStats
from services.proxy.telemetry.denials import InboundDenialCollector, register


def _scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_counts_are_read_at_scrape_time_by_reason() -> None:
    stats = InboundStats()
    registry = CollectorRegistry(auto_describe=False)
    refused = [0]
    register(registry, lambda: stats, lambda: refused[0])
    stats.rbac_denied += 2
    stats.custom_denied += 1
    stats.jwt_rejected += 3
    stats.transport_refused += 4
    stats.spiffe_id_refused += 6
    refused[0] = 5
    text = _scrape(registry)
    assert 'isthmus_proxy_inbound_denied_total{reason="rbac"} 2.0' in text
    assert 'isthmus_proxy_inbound_denied_total{reason="ext_authz"} 1.0' in text
    assert 'isthmus_proxy_inbound_denied_total{reason="jwt"} 3.0' in text
    assert 'isthmus_proxy_inbound_denied_total{reason="mtls_mode"} 4.0' in text
    assert 'isthmus_proxy_inbound_denied_total{reason="spiffe_id"} 6.0' in text
    assert "isthmus_proxy_inbound_connections_refused_total 5.0" in text


def test_no_listener_yet_leaves_out_the_connection_counter() -> None:
    registry = CollectorRegistry(auto_describe=False)
    register(registry, InboundStats, lambda: None)
    text = _scrape(registry)
    assert "connections_refused" not in text
    assert 'reason="rbac"} 0.0' in text


def test_metrics_off_registers_nothing() -> None:
    assert register(None, InboundStats, lambda: 0) is None


def test_an_unreadable_tally_skips_the_family_and_keeps_the_scrape() -> None:
    def broken() -> InboundStats:
        raise RuntimeError("gone")

    registry = CollectorRegistry(auto_describe=False)
    registry.register(InboundDenialCollector(broken, lambda: 1))
    text = _scrape(registry)
    assert "denied_total" not in text
    assert "isthmus_proxy_inbound_connections_refused_total 1.0" in text
