"""SPIFFE identities `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>` and their principals."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

SCHEME = "spiffe://"
URI_SAN = "URI"
"""The type name of a URI subject alternative name in ssl's dict form of a certificate."""
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_TRUST_DOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_SEGMENT = re.compile(r"^[a-zA-Z0-9]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$")


class InvalidSpiffeId(ValueError):
    """Raised for a string that is not an Isthmus workload SPIFFE ID; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.match(self.trust_domain):
            raise InvalidSpiffeId(f"trust domain {self.trust_domain!r} is not a lower-case DNS name")
        for what, value in (("namespace", self.namespace), ("service account", self.service_account)):
            if not _SEGMENT.match(value):
                raise InvalidSpiffeId(f"{what} {value!r} must be letters, digits, '-', '_' or '.'")

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def principal(self) -> str:
        """The form AuthorizationPolicy uses: `<trust-domain>/ns/<ns>/sa/<sa>`."""
        return f"{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri


@functools.lru_cache(maxsize=4096)
def parse_spiffe_id(uri: str) -> SpiffeId:
    """The parsed ID (cached: the data path parses each caller's ID on every request); raises InvalidSpiffeId."""
    if not uri.startswith(SCHEME):
        raise InvalidSpiffeId(f"{uri!r} does not start with {SCHEME!r}")
    trust_domain, _, path = uri[len(SCHEME) :].partition("/")
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
        raise InvalidSpiffeId(f"{uri!r} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<account>")
    return SpiffeId(trust_domain=trust_domain, namespace=parts[1], service_account=parts[3])


def principal_of(uri: str) -> str:
    """`spiffe://td/ns/a/sa/b` -> `td/ns/a/sa/b`; raises InvalidSpiffeId for anything else."""
    return parse_spiffe_id(uri).principal


def spiffe_id_of_peer_cert(cert: Mapping[str, object] | None) -> str | None:
    """The single SPIFFE URI SAN of a peer certificate in ssl's dict form (`SSLObject.getpeercert()`), or None
    when it has none or more than one. ssl gives the dict only for a verified certificate ({} otherwise), so an
    unverified peer has no SPIFFE ID."""
    if not cert:
        return None
    names = cert.get("subjectAltName")
    if not isinstance(names, tuple):
        return None
    uris = [
        entry[1]
        for entry in names
        if isinstance(entry, tuple)
        and len(entry) == 2
        and entry[0] == URI_SAN
        and isinstance(entry[1], str)
        and entry[1].startswith(SCHEME)
    ]
    return uris[0] if len(uris) == 1 else None
