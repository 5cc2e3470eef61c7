"""`python -m services.citadel`: load or create the CA, serve CreateCertificate, keep the trust bundle published,
and pick up replaced CA files (polled every --ca-reload-interval, or at once on SIGHUP; see reload.py), signing
with them once their roots have been published for --ca-handover-grace (handover.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import uvloop

from services.citadel.bundle import keep_bundle_published
from services.citadel.ca import DEFAULT_TTL_SECONDS, CertificateAuthority, TtlPolicy
from services.citadel.ca_store import CaStateError
from services.citadel.handover import HANDOVER_GRACE_SECONDS
from services.citadel.metrics import CitadelMetrics, start_metrics_server
from services.citadel.reload import RELOAD_INTERVAL_SECONDS, CaReloader, CurrentCa
from services.citadel.revocation import RevocationList, follow_revocations
from services.citadel.server import CitadelServer
from shared.clock import SYSTEM_CLOCK
from shared.model.base import parse_duration
from shared.ports import DEFAULT_CITADEL_ADDR, DEFAULT_NATS_URL, DEFAULT_TRUST_DOMAIN, NATS_URL_ENV
from shared.tasks import cancel_until_done

log = logging.getLogger("citadel")

DEFAULT_STATE_DIR = ".isthmus/citadel"
DEFAULT_MAX_TTL = "720h"
STOP_GRACE_SECONDS = 2.0
REVOCATIONS_READY_WAIT = 15.0


def duration_seconds(text: str) -> int:
    """argparse type for Istio duration text ("24h", "90s"); whole seconds, at least one."""
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is shorter than one second")
    return int(seconds)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path, default=Path(DEFAULT_STATE_DIR), help="where the root CA lives")
    parser.add_argument("--listen", default=DEFAULT_CITADEL_ADDR, help="gRPC host:port (port 0 picks one)")
    parser.add_argument(
        "--nats-url",
        default=os.environ.get(NATS_URL_ENV, DEFAULT_NATS_URL),
        help=f"NATS for the trust bundle (default ${NATS_URL_ENV} or {DEFAULT_NATS_URL})",
    )
    parser.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN)
    parser.add_argument(
        "--san", action="append", default=[], help="extra DNS name or IP for citadel's own serving certificate"
    )
    parser.add_argument(
        "--default-ttl", type=duration_seconds, default=DEFAULT_TTL_SECONDS, help="workload cert lifetime (24h)"
    )
    parser.add_argument(
        "--metrics-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (off by default)",
    )
    parser.add_argument(
        "--no-token-revocation",
        dest="token_revocation",
        action="store_false",
        help="do not follow the token revocation list in NATS (tokens then cannot be revoked)",
    )
    parser.add_argument(
        "--ca-reload-interval",
        type=parse_duration,
        default=RELOAD_INTERVAL_SECONDS,
        help="how often to look for replaced CA files in --state-dir (e.g. 5s; 0: only on SIGHUP)",
    )
    parser.add_argument(
        "--ca-handover-grace",
        type=parse_duration,
        default=HANDOVER_GRACE_SECONDS,
        help="after replaced CA files load, how long their roots are published before the new CA signs (60s)",
    )
    parser.add_argument(
        "--max-ttl",
        type=duration_seconds,
        default=duration_seconds(DEFAULT_MAX_TTL),
        help=f"longest workload cert lifetime a request may ask for ({DEFAULT_MAX_TTL})",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; 0 on a clean stop, 1 when the CA or the port cannot be set up."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        ttl = TtlPolicy(default_seconds=args.default_ttl, max_seconds=args.max_ttl)
        ca = CertificateAuthority.load_or_create(args.state_dir, args.trust_domain, ttl=ttl)
    except (CaStateError, ValueError, OSError) as error:
        log.error("cannot load the CA: %s", error)
        return 1
    return uvloop.run(_serve(ca, args))


async def _serve(ca: CertificateAuthority, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    revocations = RevocationList() if getattr(args, "token_revocation", True) else None
    current = CurrentCa(ca, grace_seconds=getattr(args, "ca_handover_grace", HANDOVER_GRACE_SECONDS))
    server = CitadelServer(current, extra_sans=args.san, revoked=revocations.revoked if revocations else None)
    interval = getattr(args, "ca_reload_interval", RELOAD_INTERVAL_SECONDS)
    reloader = CaReloader(
        args.state_dir, current, server.metrics, SYSTEM_CLOCK, interval=interval or RELOAD_INTERVAL_SECONDS
    )
    loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    metrics_runner = None
    try:
        port = await server.start(args.listen)
        if getattr(args, "metrics_listen", None):
            host, _, metrics_port = args.metrics_listen.rpartition(":")
            metrics_runner, bound = await start_metrics_server(server.metrics, host or "127.0.0.1", int(metrics_port))
            log.info("citadel metrics on http://%s:%d/metrics", host or "127.0.0.1", bound)
    except (OSError, RuntimeError, ValueError) as error:
        log.error("cannot listen on %s: %s", args.listen, error)
        await server.stop(0)
        return 1
    publisher = asyncio.create_task(
        keep_bundle_published(
            args.nats_url, current.trust_bundle_pem, SYSTEM_CLOCK, current.changed, published=current.published
        )
    )
    background = [publisher]
    if interval > 0:
        background.append(asyncio.create_task(reloader.run()))
    if revocations is not None:
        background.append(asyncio.create_task(follow_revocations(args.nats_url, revocations, SYSTEM_CLOCK)))
        background.append(asyncio.create_task(_loaded_metric(revocations, server.metrics)))
    if revocations is not None:
        try:  # token logins are refused until the denylist is known: announce readiness after it, if it comes soon
            await asyncio.wait_for(revocations.ready.wait(), REVOCATIONS_READY_WAIT)
        except TimeoutError:
            log.warning("token revocation list not loaded yet; token logins are refused until it is")
    host = args.listen.rsplit(":", 1)[0]
    log.info("citadel ready on %s:%d", host, port)
    try:
        await stop.wait()
    finally:
        await cancel_until_done(background)
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await server.stop(STOP_GRACE_SECONDS)
    log.info("citadel stopped")
    return 0


async def _loaded_metric(revocations: RevocationList, metrics: CitadelMetrics) -> None:
    await revocations.ready.wait()
    metrics.revoked_tokens_ready.set(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="citadel", description="Isthmus certificate authority")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
