"""The peer's SPIFFE ID read from ssl's dict form of its verified certificate: the single spiffe:// URI SAN."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.citadel.testing import ca_certificate
from services.proxy import tls
from services.proxy.tls import peer_spiffe_id
from shared.identity.spiffe import spiffe_id_of_peer_cert
from shared.identity.svid import private_key_pem, spiffe_id_of_cert

A = "spiffe://cluster.local/ns/shop/sa/a"
B = "spiffe://cluster.local/ns/shop/sa/b"
NOW = datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def ca() -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca_certificate("peer test root", key, None, key, "cluster.local")
    return Ca(key, cert)


def leaf(ca: Ca, names: list[x509.GeneralName], directory: Path, label: str) -> tuple[x509.Certificate, Path]:
    """A leaf signed by `ca` with these SANs (none: no SAN extension), written with its key to one PEM file."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "isthmus")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(hours=1))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    path = directory / f"{label}.pem"
    path.write_bytes(private_key_pem(key) + cert.public_bytes(serialization.Encoding.PEM))
    return cert, path


def handshake(ca: Ca, server_pem: Path, client_pem: Path) -> ssl.SSLObject:
    """Both sides verify the other against `ca`, over memory BIOs; returns the server's side after the handshake."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    for context, pem in ((server_ctx, server_pem), (client_ctx, client_pem)):
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=ca.pem.decode())
        context.load_cert_chain(pem)
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False)
    done = {"server": False, "client": False}
    for _ in range(10):
        for side, obj in (("client", client), ("server", server)):
            if done[side]:
                continue
            try:
                obj.do_handshake()
                done[side] = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return server
    raise AssertionError("the handshake did not complete")


class FakeTransport(asyncio.BaseTransport):
    def __init__(self, ssl_object: Any) -> None:
        super().__init__()
        self._ssl_object = ssl_object

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._ssl_object if name == "ssl_object" else default


class CountingSslObject:
    """Forwards to an SSLObject and counts the dict-form reads of the peer certificate."""

    def __init__(self, inner: ssl.SSLObject) -> None:
        self.inner = inner
        self.dict_reads = 0

    def getpeercert(self, binary_form: bool = False) -> Any:
        if not binary_form:
            self.dict_reads += 1
        return self.inner.getpeercert(binary_form)


CASES = [
    pytest.param([], None, id="no SAN"),
    pytest.param([x509.DNSName("a.example")], None, id="DNS name only"),
    pytest.param([x509.UniformResourceIdentifier(A)], A, id="one SPIFFE URI"),
    pytest.param(
        [x509.UniformResourceIdentifier("https://a.example/"), x509.UniformResourceIdentifier(A)],
        A,
        id="one SPIFFE URI among other URIs",
    ),
    pytest.param([x509.UniformResourceIdentifier(A), x509.UniformResourceIdentifier(B)], None, id="two SPIFFE URIs"),
]


@pytest.mark.parametrize(("names", "expected"), CASES)
def test_peer_id_from_the_verified_certificate(ca: Ca, tmp_path: Path, names: list[Any], expected: str | None) -> None:
    client_cert, client_pem = leaf(ca, names, tmp_path, "client")
    _, server_pem = leaf(ca, [x509.UniformResourceIdentifier(B)], tmp_path, "server")
    server_side = handshake(ca, server_pem, client_pem)
    assert spiffe_id_of_peer_cert(server_side.getpeercert()) == expected
    assert spiffe_id_of_cert(client_cert) == expected  # the same answer the X.509 parser gives
    tls._peer_ids.clear()
    counting = CountingSslObject(server_side)
    transport = FakeTransport(counting)
    assert peer_spiffe_id(transport) == expected
    assert peer_spiffe_id(transport) == expected
    assert counting.dict_reads == 1  # decoded once per certificate, then served from the cache


def test_plain_text_and_unverified_peers_have_no_id() -> None:
    assert peer_spiffe_id(None) is None
    assert peer_spiffe_id(FakeTransport(None)) is None
    assert spiffe_id_of_peer_cert({}) is None  # what ssl returns for a certificate it did not verify
    assert spiffe_id_of_peer_cert(None) is None


@pytest.mark.parametrize(
    ("cert", "expected"),
    [
        ({"subjectAltName": (("URI", A),)}, A),
        ({"subjectAltName": (("URI", A), ("URI", B))}, None),
        ({"subjectAltName": (("URI", A), ("URI", A))}, None),
        ({"subjectAltName": (("DNS", A),)}, None),
        ({"subjectAltName": (("URI", "http://a"),)}, None),
        ({"subjectAltName": "URI:" + A}, None),
        ({"subject": ((("organizationName", "isthmus"),),)}, None),
    ],
)
def test_dict_form_edge_cases(cert: dict[str, Any], expected: str | None) -> None:
    assert spiffe_id_of_peer_cert(cert) == expected
