"""Fixtures of the pilot integration tests: a NATS connection and a Consul catalog cleaned up afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import nats
import pytest
from nats.aio.client import Client as NATS

from tests.integration.pilot.support import Catalog


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[NATS]:
    nc = await nats.connect(nats_url)
    yield nc
    await nc.drain()


@pytest.fixture
async def catalog(consul_addr: str) -> AsyncIterator[Catalog]:
    async with aiohttp.ClientSession() as session:
        registry = Catalog(session, consul_addr)
        yield registry
        for service_id in registry.registered:
            await registry.deregister(service_id)
