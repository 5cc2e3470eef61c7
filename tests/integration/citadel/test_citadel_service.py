"""Citadel over real gRPC/TLS on loopback: issue by token, renewal by current cert, refusals, bundle in KV."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import nats
import pytest
from cryptography import x509

from services.citadel.bundle import keep_bundle_published, publish_trust_bundle, read_trust_bundle
from services.citadel.ca import CertificateAuthority
from services.citadel.client import CertificateRefused, CitadelClient
from services.citadel.server import CitadelServer
from services.citadel.tokens import create_token
from services.local.processes import free_port
from shared.clock import SYSTEM_CLOCK, FakeClock
from shared.identity import SpiffeId
from shared.identity.svid import build_csr, new_private_key, private_key_pem, spiffe_id_of_cert
from shared.proto import citadel_pb2, citadel_pb2_grpc

pytestmark = pytest.mark.integration

WEB = SpiffeId("cluster.local", "shop", "web")


@pytest.fixture
async def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "citadel", "cluster.local")


@pytest.fixture
async def address(ca: CertificateAuthority) -> AsyncIterator[str]:
    server = CitadelServer(ca)
    port = await server.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await server.stop(0)


@pytest.fixture
async def client(address: str, ca: CertificateAuthority) -> AsyncIterator[CitadelClient]:
    citadel = CitadelClient(address, ca.trust_bundle_pem())
    yield citadel
    await citadel.close()


def token_for(ca: CertificateAuthority, identity: SpiffeId = WEB) -> str:
    return create_token(ca, identity.namespace, identity.service_account, 600, SYSTEM_CLOCK)


async def test_first_certificate_by_token(client: CitadelClient, ca: CertificateAuthority) -> None:
    key = new_private_key()
    issued = await client.create_certificate(build_csr(key, WEB.uri), token=token_for(ca), ttl_seconds=3600)
    leaf = x509.load_pem_x509_certificate(issued.leaf_pem)
    assert spiffe_id_of_cert(leaf) == WEB.uri
    assert leaf.public_key() == key.public_key()
    assert issued.trust_bundle_pem == ca.trust_bundle_pem()
    assert issued.not_after == leaf.not_valid_after_utc.timestamp()
    assert 3500 < issued.not_after - SYSTEM_CLOCK.wall() <= 3600


async def test_renewal_with_the_issued_certificate(client: CitadelClient, ca: CertificateAuthority) -> None:
    key = new_private_key()
    first = await client.create_certificate(build_csr(key, WEB.uri), token=token_for(ca))
    next_key = new_private_key()
    renewed = await client.create_certificate(
        build_csr(next_key, WEB.uri), client_chain_pem=first.leaf_pem, client_key_pem=private_key_pem(key)
    )
    leaf = x509.load_pem_x509_certificate(renewed.leaf_pem)
    assert leaf.public_key() == next_key.public_key()
    assert leaf.serial_number != x509.load_pem_x509_certificate(first.leaf_pem).serial_number


async def test_renewal_cannot_change_identity(client: CitadelClient, ca: CertificateAuthority) -> None:
    key = new_private_key()
    first = await client.create_certificate(build_csr(key, WEB.uri), token=token_for(ca))
    db = "spiffe://cluster.local/ns/shop/sa/db"
    with pytest.raises(CertificateRefused, match=r"asks for .*sa/db but the caller is .*sa/web") as refused:
        await client.create_certificate(
            build_csr(new_private_key(), db), client_chain_pem=first.leaf_pem, client_key_pem=private_key_pem(key)
        )
    assert refused.value.code == "PERMISSION_DENIED"


async def test_token_for_another_identity_is_refused(client: CitadelClient, ca: CertificateAuthority) -> None:
    token = token_for(ca, SpiffeId("cluster.local", "shop", "db"))
    with pytest.raises(CertificateRefused) as refused:
        await client.create_certificate(build_csr(new_private_key(), WEB.uri), token=token)
    assert refused.value.code == "PERMISSION_DENIED"


async def test_stolen_certificate_without_its_key_cannot_renew(client: CitadelClient, ca: CertificateAuthority) -> None:
    first = await client.create_certificate(build_csr(new_private_key(), WEB.uri), token=token_for(ca))
    thief_key = private_key_pem(new_private_key())
    with pytest.raises(CertificateRefused, match="renewal proof") as refused:
        await client.create_certificate(
            build_csr(new_private_key(), WEB.uri), client_chain_pem=first.leaf_pem, client_key_pem=thief_key
        )
    assert refused.value.code == "UNAUTHENTICATED"


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 10_000])
async def test_garbage_token_is_unauthenticated(client: CitadelClient, token: str) -> None:
    with pytest.raises(CertificateRefused, match="bootstrap token refused") as refused:
        await client.create_certificate(build_csr(new_private_key(), WEB.uri), token=token)
    assert refused.value.code == "UNAUTHENTICATED"


async def test_no_credentials_is_unauthenticated(client: CitadelClient) -> None:
    with pytest.raises(CertificateRefused, match="send a bootstrap token") as refused:
        await client.create_certificate(build_csr(new_private_key(), WEB.uri))
    assert refused.value.code == "UNAUTHENTICATED"


async def test_garbage_requests_get_clear_errors_and_the_server_keeps_serving(
    address: str, ca: CertificateAuthority, client: CitadelClient
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.trust_bundle_pem())
    options = [("grpc.ssl_target_name_override", "citadel")]
    async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
        stub = citadel_pb2_grpc.CertificateServiceStub(channel)  # type: ignore[no-untyped-call]
        requests = [
            citadel_pb2.CreateCertificateRequest(csr_pem="\u2603 not a csr", token=token_for(ca)),
            citadel_pb2.CreateCertificateRequest(
                csr_pem=build_csr(new_private_key(), WEB.uri).decode(), ttl_seconds=-5, token=token_for(ca)
            ),
        ]
        for request in requests:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.CreateCertificate(request, timeout=5)
            assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert failed.value.details()
        bad_metadata = (("isthmus-client-cert-bin", b"\x00junk"), ("isthmus-renewal-proof-bin", b"\xff"))
        request = citadel_pb2.CreateCertificateRequest(csr_pem=build_csr(new_private_key(), WEB.uri).decode())
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.CreateCertificate(request, metadata=bad_metadata, timeout=5)
        assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    issued = await client.create_certificate(build_csr(new_private_key(), WEB.uri), token=token_for(ca))
    assert issued.chain_pem


async def test_client_refuses_a_citadel_outside_its_trust_bundle(address: str) -> None:
    stranger = CertificateAuthority.create("cluster.local")
    citadel = CitadelClient(address, stranger.trust_bundle_pem(), timeout_seconds=3)
    try:
        with pytest.raises(ConnectionError):
            await citadel.create_certificate(build_csr(new_private_key(), WEB.uri), token=token_for(stranger))
    finally:
        await citadel.close()


async def test_unreachable_citadel_is_a_connection_error(ca: CertificateAuthority) -> None:
    citadel = CitadelClient(f"127.0.0.1:{free_port()}", ca.trust_bundle_pem(), timeout_seconds=2)
    try:
        with pytest.raises(ConnectionError):
            await citadel.create_certificate(build_csr(new_private_key(), WEB.uri), token=token_for(ca))
    finally:
        await citadel.close()


async def test_issued_certificates_work_for_mutual_tls(
    client: CitadelClient, ca: CertificateAuthority, tmp_path: Path
) -> None:
    """Two workloads' certs complete a real mTLS handshake, each side seeing the other's SPIFFE ID."""
    paths = {}
    for name in ("web", "db"):
        key = new_private_key()
        identity = SpiffeId("cluster.local", "shop", name)
        issued = await client.create_certificate(build_csr(key, identity.uri), token=token_for(ca, identity))
        (tmp_path / f"{name}.pem").write_bytes(b"".join(issued.chain_pem))
        (tmp_path / f"{name}.key").write_bytes(private_key_pem(key))
        paths[name] = (str(tmp_path / f"{name}.pem"), str(tmp_path / f"{name}.key"))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=ca.trust_bundle_pem().decode())
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_cert_chain(*paths["db"])
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca.trust_bundle_pem().decode())
    client_ctx.check_hostname = False  # mesh peers are checked by SPIFFE ID, not host name
    client_ctx.load_cert_chain(*paths["web"])
    seen: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        seen.set_result(spiffe_id_of_cert(x509.load_der_x509_certificate(der)))
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert spiffe_id_of_cert(x509.load_der_x509_certificate(peer)) == "spiffe://cluster.local/ns/shop/sa/db"
        assert await asyncio.wait_for(seen, 5) == "spiffe://cluster.local/ns/shop/sa/web"
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def test_trust_bundle_is_published_to_kv(nats_url: str, ca: CertificateAuthority) -> None:
    clock = FakeClock()
    publisher = asyncio.create_task(keep_bundle_published(nats_url, ca.trust_bundle_pem(), clock))
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        deadline = asyncio.get_running_loop().time() + 10
        while await read_trust_bundle(js) != ca.trust_bundle_pem():
            assert asyncio.get_running_loop().time() < deadline, "trust bundle never appeared in KV"
            await asyncio.sleep(0.05)
        assert await publish_trust_bundle(js, ca.trust_bundle_pem()) is False  # unchanged: no new revision
    finally:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        await connection.close()
