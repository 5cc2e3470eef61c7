"""The enrollment child process against a real citadel: token, renewal, refusals, and the fallback to the token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.citadel.ca import CertificateAuthority
from services.citadel.server import CitadelServer
from services.citadel.tokens import create_token
from services.proxy.csr_child import CertificateCallRefused, EnrollmentRequest, enroll_in_child
from services.proxy.tls import WorkloadIdentity, client_context, server_context
from shared.clock import SYSTEM_CLOCK
from shared.identity import SpiffeId
from shared.identity.enrollment import Enrollment, first_certificate_der
from shared.identity.svid import build_csr, new_private_key, private_key_pem, spiffe_id_of_cert

pytestmark = pytest.mark.integration

WEB = SpiffeId("cluster.local", "shop", "web")
DB = SpiffeId("cluster.local", "shop", "db")


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "citadel", "cluster.local")


@pytest.fixture
async def address(ca: CertificateAuthority) -> AsyncIterator[str]:
    server = CitadelServer(ca)
    port = await server.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await server.stop(0)


def token_for(ca: CertificateAuthority, identity: SpiffeId) -> str:
    return create_token(ca, identity.namespace, identity.service_account, 600, SYSTEM_CLOCK)


def request(
    address: str, ca: CertificateAuthority, token: str | None, renew: Enrollment | None = None
) -> EnrollmentRequest:
    return EnrollmentRequest(
        address,
        "citadel",
        ca.trust_bundle_pem(),
        WEB.uri,
        token,
        renew_chain_pem=b"".join(renew.chain_pem) if renew is not None else None,
        renew_key_pem=renew.key_pem if renew is not None else None,
    )


def assert_checked(enrolled: Enrollment, ca: CertificateAuthority) -> None:
    leaf = x509.load_pem_x509_certificate(enrolled.chain_pem[0])
    key = serialization.load_pem_private_key(enrolled.key_pem, password=None)
    assert spiffe_id_of_cert(leaf) == WEB.uri
    assert leaf.public_key() == key.public_key()
    assert enrolled.not_after == leaf.not_valid_after_utc.timestamp() > SYSTEM_CLOCK.wall()
    assert enrolled.trust_bundle_pem == ca.trust_bundle_pem()
    assert enrolled.issuer_root_der == first_certificate_der(ca.trust_bundle_pem())
    identity = WorkloadIdentity(WEB.uri, enrolled.key_pem, enrolled.chain_pem, enrolled.trust_bundle_pem, 0.0)
    server_context(identity)  # OpenSSL takes key and chain together (load_cert_chain raises otherwise)
    client_context(identity)


async def test_token_then_renewal(address: str, ca: CertificateAuthority) -> None:
    first = await enroll_in_child(request(address, ca, token_for(ca, WEB)))
    assert_checked(first, ca)
    renewed = await enroll_in_child(request(address, ca, None, renew=first))
    assert_checked(renewed, ca)
    assert renewed.key_pem != first.key_pem  # a fresh key each time


async def test_a_token_for_another_identity_is_refused_with_its_code(address: str, ca: CertificateAuthority) -> None:
    with pytest.raises(CertificateCallRefused) as raised:
        await enroll_in_child(request(address, ca, token_for(ca, DB)))
    assert raised.value.code == "PERMISSION_DENIED"


async def test_a_renewal_citadel_no_longer_accepts_falls_back_to_the_token(
    address: str, ca: CertificateAuthority, tmp_path: Path
) -> None:
    other = CertificateAuthority.load_or_create(tmp_path / "other", "cluster.local")
    key = new_private_key()
    foreign = Enrollment(
        private_key_pem(key), other.sign_csr(build_csr(key, WEB.uri), WEB, 600), other.trust_bundle_pem(), 0.0, None
    )
    with pytest.raises(CertificateCallRefused) as raised:
        await enroll_in_child(request(address, ca, None, renew=foreign))
    assert raised.value.code == "UNAUTHENTICATED"
    enrolled = await enroll_in_child(request(address, ca, token_for(ca, WEB), renew=foreign))
    assert_checked(enrolled, ca)
