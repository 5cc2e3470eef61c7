"""Inbound refusals counted on a real sidecar's Prometheus port: a denied request and a refused connection."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.proxy.sidecar import Sidecar
from shared.model.proxy_config import ProxyConfig
from tests.integration.telemetry.conftest import apply_config, eventually, route_to

pytestmark = pytest.mark.integration


async def denial_samples(sidecar: Sidecar) -> dict[str, float]:
    """`reason` -> isthmus_proxy_inbound_denied_total, plus "connections" -> connections refused."""
    port = sidecar.listeners["prometheus"].port
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as reply:
            text = await reply.text()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "isthmus_proxy_inbound_denied_total":
                found[sample.labels["reason"]] = sample.value
            elif sample.name == "isthmus_proxy_inbound_connections_refused_total":
                found["connections"] = sample.value
    return found


def strict_deny_all(sidecar: Sidecar) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "proxyId": sidecar.proxy_id,
            "service": sidecar.settings.service,
            "namespace": "default",
            "inbound": {
                "mtlsMode": "STRICT",
                "authorization": [{"name": "deny-all", "namespace": "default", "spec": {}}],
            },
        }
    )


async def test_denied_request_and_refused_connection_are_scraped(make_sidecar: Any) -> None:
    callee = await make_sidecar("reviews")
    caller = await make_sidecar("productpage")
    assert await denial_samples(callee) == {
        "rbac": 0.0,
        "ext_authz": 0.0,
        "jwt": 0.0,
        "mtls_mode": 0.0,
        "spiffe_id": 0.0,
        "connections": 0.0,
    }
    apply_config(callee, strict_deny_all(callee))
    apply_config(caller, route_to(caller, callee))

    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{caller.listeners['outbound'].port}/"
        async with session.get(url, headers={"Host": "reviews"}) as reply:
            assert (reply.status, await reply.text()) == (403, "RBAC: access denied")
    # One plain-text connection under STRICT: closed unanswered.
    reader, writer = await asyncio.open_connection("127.0.0.1", callee.listeners["inbound"].port)
    writer.write(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(10):
        try:
            assert await reader.read() == b""
        except ConnectionResetError:
            pass  # closed with our request unread: a reset, refused either way
    writer.close()

    async def counted() -> bool:
        samples = await denial_samples(callee)
        return samples.get("rbac") == 1.0 and samples.get("connections") == 1.0

    await eventually(counted, within=10.0, what="the denial and the refused connection on /metrics")
    samples = await denial_samples(callee)
    assert samples["jwt"] == samples["ext_authz"] == samples["mtls_mode"] == 0.0
