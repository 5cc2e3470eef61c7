"""Citadel's Prometheus metrics (CSRs signed and refused by reason, root expiry) and the --metrics-listen endpoint."""

from __future__ import annotations

import socket

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest


class CitadelMetrics:
    """In a registry of its own, so several citadels (tests) can live in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.signed = Counter(
            "citadel_csr_signed",
            "Workload certificates issued, by how the caller authenticated (token or renewal).",
            ["auth"],
            registry=self.registry,
        )
        self.refused = Counter(
            "citadel_csr_refused",
            "CreateCertificate calls refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.root_expiry = Gauge(
            "citadel_root_cert_expiry_timestamp_seconds",
            "Expiry (Unix time) of the earliest-expiring root in use.",
            registry=self.registry,
        )
        self.trust_bundle_roots = Gauge(
            "citadel_trust_bundle_roots", "Roots in the published trust bundle.", registry=self.registry
        )
        self.ca_reloads = Counter(
            "citadel_ca_reloads",
            "Replacements of the CA files seen at run time, by result (applied, or invalid and ignored).",
            ["result"],
            registry=self.registry,
        )
        self.revoked_tokens_ready = Gauge(
            "citadel_token_revocations_loaded", "1 once the token revocation list is loaded.", registry=self.registry
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


async def start_metrics_server(metrics: CitadelMetrics, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve GET /metrics on host:port (0 picks a port); returns the runner (for cleanup) and the bound port."""

    async def prometheus(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.exposition())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    app = web.Application()
    app.router.add_get("/metrics", prometheus)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    await web.SockSite(runner, sock).start()
    return runner, int(sock.getsockname()[1])
