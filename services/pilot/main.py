"""Pilot's command line: flags, logging, the event loop and a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

import nats.errors
import uvloop

from services.pilot.app import DEFAULT_ROOT_NAMESPACE, Pilot, PilotSettings
from services.pilot.gc import DEFAULT_GRACE
from services.pilot.server import parse_listen
from shared.ports import (
    CONSUL_ADDR_ENV,
    DEFAULT_CONSUL_ADDR,
    DEFAULT_NATS_URL,
    DEFAULT_TRUST_DOMAIN,
    NATS_URL_ENV,
    PILOT_DEBUG,
    TRUST_DOMAIN_ENV,
)

log = logging.getLogger("services.pilot")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nats-url",
        default=os.environ.get(NATS_URL_ENV, DEFAULT_NATS_URL),
        help=f"NATS server URL (env {NATS_URL_ENV}, default %(default)s)",
    )
    parser.add_argument(
        "--consul-addr",
        default=os.environ.get(CONSUL_ADDR_ENV, DEFAULT_CONSUL_ADDR),
        help=f"Consul HTTP API host:port (env {CONSUL_ADDR_ENV}, default %(default)s)",
    )
    parser.add_argument(
        "--trust-domain",
        default=os.environ.get(TRUST_DOMAIN_ENV, DEFAULT_TRUST_DOMAIN),
        help="SPIFFE trust domain of workload identities (default %(default)s)",
    )
    parser.add_argument(
        "--root-namespace",
        default=DEFAULT_ROOT_NAMESPACE,
        help="namespace whose policies apply mesh-wide (default %(default)s)",
    )
    parser.add_argument(
        "--listen",
        default=f"127.0.0.1:{PILOT_DEBUG}",
        help="host:port of /healthz, /debug/proxies and /metrics (default %(default)s)",
    )
    parser.add_argument(
        "--proxy-grace",
        type=float,
        default=DEFAULT_GRACE,
        help="seconds a proxy may be missing from the catalog before its config and status keys are deleted "
        "(default %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default %(default)s)")


def settings_from(args: argparse.Namespace) -> PilotSettings:
    parse_listen(args.listen)
    if args.proxy_grace < 0:
        raise ValueError(f"--proxy-grace {args.proxy_grace}: must be 0 or more seconds")
    return PilotSettings(
        nats_url=args.nats_url,
        consul_addr=args.consul_addr,
        trust_domain=args.trust_domain,
        root_namespace=args.root_namespace,
        listen=args.listen,
        proxy_grace=args.proxy_grace,
    )


async def serve(settings: PilotSettings) -> None:
    """Run a pilot until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    pilot = Pilot(settings)
    try:
        await pilot.start()
        log.info("pilot serving on %s", pilot.server.url)
        await stop.wait()
        log.info("pilot stopping")
    finally:
        await pilot.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def run(args: argparse.Namespace) -> int:
    """Blocking entry point; returns the process exit code."""
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = settings_from(args)
    except ValueError as err:
        log.error("%s", err)
        return 2
    try:
        uvloop.run(serve(settings))
    except (OSError, nats.errors.Error) as err:
        log.error("pilot cannot start: %s", err or type(err).__name__)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pilot", description="Isthmus pilot: generates and pushes proxy config.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
