"""Galley integration fixtures: a NATS connection to the session's real nats-server, a fresh bucket per test,
and galley's HTTP API served on a free loopback port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from aiohttp import web
from nats.aio.client import Client as NatsClient

from services.galley.api import create_app
from services.galley.store import ConfigStore


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url, name="galley-tests")
    yield client
    await client.drain()


@pytest.fixture
def bucket() -> str:
    """A bucket of its own per test, so tests never see each other's (or other suites') config."""
    return f"galley_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(nc: NatsClient, bucket: str) -> AsyncIterator[ConfigStore]:
    yield await ConfigStore.open(nc.jetstream(), bucket=bucket)
    await nc.jetstream().delete_key_value(bucket)


@pytest.fixture
async def galley_url(store: ConfigStore, nc: NatsClient) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(store, lambda: nc.is_connected))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()
