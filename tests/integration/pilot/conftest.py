"""Fixtures of the pilot integration tests: a NATS connection, a Consul catalog cleaned up afterwards and a
running pilot (test_fleet.py has its own, with a short proxy grace period)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import nats
import pytest
from nats.aio.client import Client as NATS

from services.pilot.app import Pilot, PilotSettings
from tests.integration.pilot.support import DEADLINE, Catalog


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


@pytest.fixture
async def pilot(nats_url: str, consul_addr: str) -> AsyncIterator[Pilot]:
    settings = PilotSettings(
        nats_url=nats_url, consul_addr=consul_addr, listen="127.0.0.1:0", consul_wait=5.0, quiet=0.05
    )
    running = Pilot(settings)
    await running.start()
    await asyncio.wait_for(running.ready.wait(), DEADLINE)
    yield running
    await running.stop()
