"""Pilot's Prometheus metrics, in a registry of their own so several pilots can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

CONVERGENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class PilotMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.pushes = Counter(
            "pilot_pushes", "Proxy configs written to the proxy config bucket.", registry=self.registry
        )
        self.push_errors = Counter(
            "pilot_push_errors", "Proxy configs that could not be generated or written.", registry=self.registry
        )
        self.push_duration = Histogram(
            "pilot_push_duration_seconds",
            "Time to generate and write the configs of every proxy for one snapshot.",
            registry=self.registry,
        )
        self.proxies = Gauge("pilot_proxies", "Proxies in the current snapshot.", registry=self.registry)
        self.catalog_services = Gauge(
            "pilot_catalog_services", "Consul catalog services in the current snapshot.", registry=self.registry
        )
        self.config_resources = Gauge(
            "pilot_config_resources", "Accepted config resources in the current snapshot.", registry=self.registry
        )
        self.catalog_instances = Gauge(
            "pilot_catalog_instances", "Consul service instances in the current snapshot.", registry=self.registry
        )
        self.convergence = Histogram(
            "pilot_convergence_seconds",
            "From a config or catalog change observed to every proxy it changed having ACKed the new version.",
            buckets=CONVERGENCE_BUCKETS,
            registry=self.registry,
        )
        self.proxy_convergence = Histogram(
            "pilot_proxy_convergence_seconds",
            "From a change observed to one affected proxy ACKing its new version.",
            buckets=CONVERGENCE_BUCKETS,
            registry=self.registry,
        )
        self.proxies_pending = Gauge(
            "pilot_proxies_pending", "Proxies sent a version they have not ACKed or NACKed yet.", registry=self.registry
        )
        self.nacks = Counter("pilot_proxy_nacks", "NACKs proxies wrote for a config version.", registry=self.registry)
        self.proxy_keys_deleted = Counter(
            "pilot_proxy_keys_deleted",
            "Proxy config keys deleted because their instance was gone for longer than the grace period.",
            registry=self.registry,
        )
        self.config_rejected = Counter(
            "pilot_config_rejected", "Config bucket values that failed to parse.", registry=self.registry
        )
