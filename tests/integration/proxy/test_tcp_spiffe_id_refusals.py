"""On a TCP port, a client certificate from a trusted root that names no SPIFFE ID, or one that does not parse, is
closed before a byte reaches the app and counted as isthmus_proxy_inbound_denied_total{reason="spiffe_id"}, as on
an HTTP port; an AuthorizationPolicy denial on TCP counts as reason="rbac"."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.proxy.enroll_in_process import InProcessEnroller
from services.proxy.sidecar import Sidecar
from services.proxy.snapshot import ConfigSnapshot
from services.proxy.telemetry.setup import TelemetrySettings
from shared.model.proxy_config import ProxyConfig
from tests.integration.proxy.citadel_mesh import sidecar_settings
from tests.integration.proxy.conftest import CASource, TestCA
from tests.integration.proxy.test_spiffe_id_refusals import CALLER, NO_SPIFFE_ID, UNPARSEABLE, denied, presenting

pytestmark = pytest.mark.integration


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def callee(tmp_path: Path, test_ca: TestCA) -> AsyncIterator[Sidecar]:
    app = await asyncio.start_server(echo, "127.0.0.1", 0)
    settings = sidecar_settings(tmp_path / "db", "db", int(app.sockets[0].getsockname()[1]))
    settings = dataclasses.replace(settings, protocol="tcp", telemetry=TelemetrySettings(prometheus_port=0))
    sidecar = Sidecar(settings, InProcessEnroller(CASource(test_ca)), bus_trust_bundle=False)
    await sidecar.start()
    configure(sidecar)
    yield sidecar
    await sidecar.stop()
    app.close()


def configure(sidecar: Sidecar, authorization: list[dict[str, Any]] | None = None) -> None:
    config = ProxyConfig.model_validate(
        {
            "proxyId": sidecar.proxy_id,
            "service": "db",
            "namespace": "default",
            "inbound": {"mtlsMode": "STRICT", "authorization": authorization or []},
        }
    )
    sidecar.state.swap(ConfigSnapshot.build(config.versioned(), random.Random(1)))


async def round_trip(callee: Sidecar, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", callee.listeners["inbound"].port, ssl=context)
    """What the echo app sends back for `ping` (TLS has no half-close: the refused get end of stream at once)."""
    try:
        writer.write(b"ping")
        async with asyncio.timeout(10):
            return await reader.readexactly(4)
    except asyncio.IncompleteReadError as err:
        return err.partial
    except (ConnectionError, ssl.SSLError):
        return b""
    finally:
        writer.close()


async def test_missing_or_unparseable_spiffe_id_is_refused_and_counted(
    callee: Sidecar, test_ca: TestCA, tmp_path: Path
) -> None:
    assert await round_trip(callee, presenting(test_ca, CALLER, tmp_path)) == b"ping"
    for uri in (NO_SPIFFE_ID, UNPARSEABLE):
        assert await round_trip(callee, presenting(test_ca, uri, tmp_path)) == b"", uri
    counts = await denied(callee)
    assert counts["spiffe_id"] == 2.0
    assert counts["rbac"] == counts["mtls_mode"] == 0.0


async def test_a_policy_denial_counts_as_rbac(callee: Sidecar, test_ca: TestCA, tmp_path: Path) -> None:
    configure(callee, [{"name": "none", "namespace": "default", "spec": {"action": "DENY", "rules": [{}]}}])
    assert await round_trip(callee, presenting(test_ca, CALLER, tmp_path)) == b""
    counts = await denied(callee)
    assert (counts["rbac"], counts["spiffe_id"]) == (1.0, 0.0)
