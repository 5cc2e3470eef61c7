"""Unit fixtures for the proxy: a throwaway signer that turns a CSR into a certificate with a chosen expiry."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.identity.svid import IssuedCertificate

Signer = Callable[..., IssuedCertificate]


@pytest.fixture(scope="session")
def signer() -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "unit root")])
    now = datetime.datetime.now(datetime.UTC)
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    root_pem = root.public_bytes(serialization.Encoding.PEM)

    def sign(
        csr_pem: bytes, not_after: float, uri: str | list[str] | None = None, public_key: Any = None
    ) -> IssuedCertificate:
        """`uri`: the SPIFFE URI SAN(s) to write instead of the CSR's (a list: each, none for []);
        `public_key`: certify this key instead of the CSR's."""
        csr = x509.load_pem_x509_csr(csr_pem)
        if uri is None:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uri = san.get_values_for_type(x509.UniformResourceIdentifier)[0]
        uris = [uri] if isinstance(uri, str) else uri
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(name)
            .public_key(public_key or csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if uris:
            names = [x509.UniformResourceIdentifier(each) for each in uris]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
        leaf = builder.sign(key, hashes.SHA256())
        return IssuedCertificate((leaf.public_bytes(serialization.Encoding.PEM),), root_pem, not_after)

    return sign
