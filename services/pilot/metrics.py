"""Pilot's Prometheus metrics, in a registry of their own so several pilots can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.config_rejected = Counter(
            "pilot_config_rejected", "Config bucket values that failed to parse.", registry=self.registry
        )
