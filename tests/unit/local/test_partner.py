"""The demo's partner API: its certificates, its HTTPS server, the config that puts it behind a ServiceEntry with
TLS origination, and the report line."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import aiohttp
from aiohttp import web

from services.demoapp.partner import build_app, server_context
from services.galley.sources import Source
from services.galley.validate import validate_sources
from services.local.partner import PARTNER_CLUSTER, PARTNER_HOST, ExternalCall, partner_config
from services.local.partner_pki import write_partner_pki


def test_the_key_is_private_and_the_certificate_verifies_for_the_host(tmp_path: Path) -> None:
    pki = write_partner_pki(tmp_path / "partner", PARTNER_HOST)
    assert stat.S_IMODE(pki.server_key.stat().st_mode) == 0o600
    first_ca = pki.ca.read_bytes()
    write_partner_pki(tmp_path / "partner", PARTNER_HOST)  # the next demo start makes a fresh CA over the files
    assert pki.ca.read_bytes() != first_ca
    assert stat.S_IMODE(pki.server_key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in pki.ca.read_text() + pki.server_cert.read_text()


async def test_the_server_answers_over_tls_and_reports_the_server_name(tmp_path: Path) -> None:
    pki = write_partner_pki(tmp_path, PARTNER_HOST)
    context, names = server_context(str(pki.server_cert), str(pki.server_key))
    runner = web.AppRunner(build_app(names))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = int(runner.addresses[0][1])
    client = ssl.create_default_context(cafile=str(pki.ca))
    try:
        async with aiohttp.ClientSession() as session:
            # Connect to 127.0.0.1 while verifying and asking for the partner's name, as the sidecar does.
            async with session.get(
                f"https://127.0.0.1:{port}/quote", ssl=client, server_hostname=PARTNER_HOST
            ) as reply:
                assert reply.status == 200
                body = await reply.json()
            assert body["path"] == "/quote"
            assert body["sni"] == PARTNER_HOST
            other = ssl.create_default_context()  # the system roots do not know the demo CA
            try:
                async with session.get(
                    f"https://127.0.0.1:{port}/quote", ssl=other, server_hostname=PARTNER_HOST
                ) as reply:
                    raise AssertionError(f"verified without the demo CA: {reply.status}")
            except aiohttp.ClientConnectorCertificateError:
                pass
    finally:
        await runner.cleanup()


def test_the_config_is_valid_and_names_the_host_the_port_and_the_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    text = partner_config(43210, ca)
    result = validate_sources([Source("partner-api.yaml", text)])
    assert result.ok, result.errors
    kinds = {(r.kind, r.metadata.namespace, r.metadata.name) for r in result.resources}
    assert kinds == {
        ("ServiceEntry", "shop", "partner-api"),
        ("DestinationRule", "shop", "partner-api"),
        ("VirtualService", "shop", "partner-api"),
    }
    assert "targetPort: 43210" in text
    assert f'caCertificates: "{ca}"' in text
    assert PARTNER_HOST != "api.partner.test", "the e2e suite serves that host in the same mesh"
    assert PARTNER_CLUSTER == f"outbound|80||{PARTNER_HOST}"


def test_the_report_line_names_the_host_the_status_and_the_answer() -> None:
    line = ExternalCall(status=200, answer={"path": "/quote"}).report_line()
    assert line == (
        f"order-service -> {PARTNER_HOST} (outside the mesh, ServiceEntry; TLS originated by the sidecar): "
        '200 {"path": "/quote"}'
    )
