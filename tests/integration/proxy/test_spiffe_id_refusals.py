"""A client certificate from a trusted root that names no SPIFFE ID, or one that does not parse, is refused by a
real sidecar's inbound listener and counted as isthmus_proxy_inbound_denied_total{reason="spiffe_id"}."""

from __future__ import annotations

import dataclasses
import random
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.proxy.enroll_in_process import InProcessEnroller
from services.proxy.sidecar import Sidecar
from services.proxy.snapshot import ConfigSnapshot
from services.proxy.telemetry.setup import TelemetrySettings
from shared.identity.svid import build_csr, new_private_key, private_key_pem
from shared.model.proxy_config import ProxyConfig
from tests.integration.proxy.citadel_mesh import sidecar_settings
from tests.integration.proxy.conftest import CASource, TestCA

pytestmark = pytest.mark.integration

CALLER = "spiffe://cluster.local/ns/default/sa/productpage"
NO_SPIFFE_ID = "https://productpage.example/"
UNPARSEABLE = "spiffe://cluster.local/workload/productpage"


@pytest.fixture
async def callee(tmp_path: Path, test_ca: TestCA, make_app: Any) -> AsyncIterator[Sidecar]:
    app = await make_app("reviews")
    settings = sidecar_settings(tmp_path / "reviews", "reviews", app.port)
    settings = dataclasses.replace(settings, telemetry=TelemetrySettings(prometheus_port=0))
    sidecar = Sidecar(settings, InProcessEnroller(CASource(test_ca)), bus_trust_bundle=False)
    await sidecar.start()
    config = ProxyConfig.model_validate(
        {"proxyId": sidecar.proxy_id, "service": "reviews", "namespace": "default", "inbound": {"mtlsMode": "STRICT"}}
    )
    sidecar.state.swap(ConfigSnapshot.build(config.versioned(), random.Random(1)))
    yield sidecar
    await sidecar.stop()


def presenting(test_ca: TestCA, uri: str, directory: Path) -> ssl.SSLContext:
    """A client context presenting a certificate from the mesh's CA whose only URI SAN is `uri`."""
    key = new_private_key()
    issued = test_ca.sign(build_csr(key, CALLER), uri=uri)
    cert_file, key_file = directory / f"{len(uri)}.crt", directory / f"{len(uri)}.key"
    cert_file.write_bytes(b"".join(issued.chain_pem))
    key_file.write_bytes(private_key_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only the server side is under test
    context.load_cert_chain(cert_file, key_file)
    return context


async def status(callee: Sidecar, context: ssl.SSLContext) -> tuple[int, str]:
    url = f"https://127.0.0.1:{callee.listeners['inbound'].port}/"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(url, ssl=context) as reply:
            return reply.status, await reply.text()


async def denied(callee: Sidecar) -> dict[str, float]:
    url = f"http://127.0.0.1:{callee.listeners['prometheus'].port}/metrics"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as reply:
            text = await reply.text()
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "isthmus_proxy_inbound_denied_total"
    }


async def test_missing_or_unparseable_spiffe_id_is_refused_and_counted(
    callee: Sidecar, test_ca: TestCA, tmp_path: Path
) -> None:
    assert (await status(callee, presenting(test_ca, CALLER, tmp_path)))[0] == 200
    for uri in (NO_SPIFFE_ID, UNPARSEABLE):
        code, body = await status(callee, presenting(test_ca, uri, tmp_path))
        assert code == 403, (uri, body)
    counts = await denied(callee)
    assert counts["spiffe_id"] == 2.0
    assert counts["rbac"] == counts["mtls_mode"] == 0.0
