"""Galley's process entry: connect to NATS, open the config store, serve the HTTP API until signalled."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import nats
import uvloop
from aiohttp import web
from nats.aio.client import Client as NatsClient

from services.galley.api import create_app
from services.galley.store import ConfigStore
from services.galley.watch_dir import DEFAULT_INTERVAL, DirectoryWatcher
from shared.ports import DEFAULT_NATS_URL, GALLEY_API, NATS_URL_ENV
from shared.tasks import cancel_until_done

log = logging.getLogger("galley")

DEFAULT_LISTEN = f"127.0.0.1:{GALLEY_API}"


def parse_listen(text: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port), with an error naming the flag when malformed."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--listen: expected HOST:PORT (e.g. {DEFAULT_LISTEN}), got {text!r}")
    return host, int(port_text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HTTP API address (default {DEFAULT_LISTEN})")
    parser.add_argument(
        "--nats-url",
        default=os.environ.get(NATS_URL_ENV, DEFAULT_NATS_URL),
        help=f"NATS server URL (default ${NATS_URL_ENV} or {DEFAULT_NATS_URL})",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument(
        "--watch-dir",
        type=Path,
        default=None,
        help="also apply the config files of this directory, re-applying changed files and pruning what "
        "deleted ones created (GitOps)",
    )
    parser.add_argument(
        "--watch-interval", type=float, default=DEFAULT_INTERVAL, help="seconds between directory scans (default 1)"
    )


async def connect_nats(url: str) -> NatsClient:
    async def disconnected() -> None:
        log.warning("disconnected from NATS; requests get 503 until it is back")

    async def reconnected() -> None:
        log.info("reconnected to NATS")

    async def error(err: Exception) -> None:
        log.warning("NATS: %r", err)

    return await nats.connect(
        url,
        name="isthmus-galley",
        max_reconnect_attempts=-1,
        connect_timeout=5,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
    )


async def serve(
    listen: tuple[str, int],
    nats_url: str,
    stop: asyncio.Event,
    on_ready: Callable[[str], None] | None = None,
    watch_dir: Path | None = None,
    watch_interval: float = DEFAULT_INTERVAL,
) -> None:
    """Serve until `stop` is set (even while still waiting for NATS), then close and drain."""
    log.info("connecting to NATS at %s", nats_url)
    connecting = asyncio.ensure_future(connect_nats(nats_url))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():
        # A cancel landing just as a connect attempt fails can be swallowed inside the client's retry
        # loop, so keep cancelling until the attempt really ends.
        while not connecting.done():
            connecting.cancel()
            await asyncio.wait({connecting}, timeout=0.5)
        if not connecting.cancelled() and connecting.exception() is None:
            await connecting.result().close()
        log.info("galley stopped before NATS was reachable")
        return
    stopping.cancel()
    nc = connecting.result()
    runner: web.AppRunner | None = None
    watching: asyncio.Task[None] | None = None
    try:
        store = await ConfigStore.open(nc.jetstream())
        runner = web.AppRunner(create_app(store, lambda: nc.is_connected), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, listen[0], listen[1])
        await site.start()
        address = ", ".join(_format_address(addr) for addr in runner.addresses)
        log.info("galley ready on %s", address)
        if watch_dir is not None:
            log.info("watching %s for config files", watch_dir)
            watching = asyncio.create_task(DirectoryWatcher(store, watch_dir, interval=watch_interval).run())
        if on_ready is not None:
            on_ready(address)
        await stop.wait()
        log.info("galley stopping")
    finally:
        if watching is not None:
            await cancel_until_done([watching])
        if runner is not None:
            await runner.cleanup()
        await nc.drain()


def _format_address(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return str(addr)


async def _main(listen: tuple[str, int], nats_url: str, watch_dir: Path | None, watch_interval: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(listen, nats_url, stop, watch_dir=watch_dir, watch_interval=watch_interval)


def run(args: argparse.Namespace) -> int:
    """Blocking entry: returns 0 after a clean stop, 1 when galley cannot start."""
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        listen = parse_listen(args.listen)
    except ValueError as err:
        log.error("%s", err)
        return 1
    try:
        watch_dir = getattr(args, "watch_dir", None)
        if watch_dir is not None and not watch_dir.is_dir():
            log.error("--watch-dir %s: not a directory", watch_dir)
            return 1
        uvloop.run(_main(listen, args.nats_url, watch_dir, getattr(args, "watch_interval", DEFAULT_INTERVAL)))
    except OSError as err:
        log.error("galley cannot start: %s", err)
        return 1
    except nats.errors.NoServersError:
        log.error("galley cannot start: no NATS server reachable at %s", args.nats_url)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="galley", description="Isthmus config validation and storage.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
