# mypy: ignore-errors
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CreateCertificateRequest(_message.Message):
    __slots__ = ("csr_pem", "ttl_seconds", "token")
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    csr_pem: str
    ttl_seconds: int
    token: str
    def __init__(self, csr_pem: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., token: _Optional[str] = ...) -> None: ...

class CreateCertificateResponse(_message.Message):
    __slots__ = ("cert_chain_pem", "trust_bundle_pem")
    CERT_CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    TRUST_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    cert_chain_pem: _containers.RepeatedScalarFieldContainer[str]
    trust_bundle_pem: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cert_chain_pem: _Optional[_Iterable[str]] = ..., trust_bundle_pem: _Optional[_Iterable[str]] = ...) -> None: ...
