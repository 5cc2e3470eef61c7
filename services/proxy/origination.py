"""TLS origination of a cluster (DestinationRule `tls.mode` SIMPLE or MUTUAL): its client context and server checks.

Built once per cluster policy (balancer.ClusterRuntime carries it in its PoolSettings), never per request,
and never with the mesh's own certificates: the context trusts `caCertificates` (unset: the system's trust
store) and, for MUTUAL, presents `clientCertificate` / `privateKey`. The name sent as SNI is `sni`, else the
cluster's host. Verification: without `subjectAltNames`, OpenSSL checks the certificate against that name
during the handshake; with them, the handshake checks the chain only and `verify` then requires one of the
names among the certificate's DNS (wildcards as in RFC 6125), URI or IP SANs; `insecureSkipVerify` checks
nothing. A file that cannot be loaded leaves the cluster unusable, not the config: `context()` raises
OriginationUnavailable (503 UF) until the files load.

Files are watched, as Envoy watches file-based certificates: an OriginationWatch stats them (mtime_ns, size,
inode) at most every RELOAD_INTERVAL seconds, only when a request needs the cluster, and builds a new
Origination when one changed (a rotated certificate, a CA bundle rewritten, a missing file that appeared).
A new Origination is a new identity, so new connections use new pools while the old ones drain. A change
that fails to load keeps the last good Origination and is logged once; with no good one yet, the cluster
stays unusable. A file rewritten twice within one timestamp tick without changing size or inode is seen
only at its next change.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from services.proxy.errors import UpstreamConnectFailure
from shared.clock import Clock
from shared.model.destination_rule import ORIGINATION_MODES, ClientTLSSettings, TLSMode
from shared.model.proxy_config import Cluster

log = logging.getLogger(__name__)

HTTP2_ALPN = ("h2",)
"""What TLS to an HTTP/2 endpoint offers: servers of gRPC and HTTP/2 over TLS speak it only when negotiated."""

_SAN_TYPES = ("DNS", "URI", "IP Address")

_UNAVAILABLE = "TLS origination unavailable: "

RELOAD_INTERVAL = 5.0
"""Seconds between two checks of a cluster's certificate files (each check is one stat per file)."""

FileStamp = tuple[int, int, int] | None
"""A file's (mtime_ns, size, inode); None: it could not be stat'ed (missing, unreadable directory)."""


class OriginationUnavailable(UpstreamConnectFailure):
    """The cluster's TLS context could not be built (a certificate file missing or unreadable)."""


class OriginationRefused(aiohttp.ClientConnectionError):
    """The upstream's certificate carries none of the cluster's subjectAltNames: the request is never sent."""


@dataclass(frozen=True, slots=True, eq=False)
class Origination:
    """One cluster's TLS origination; compared by identity, so a rebuilt one gets new pools."""

    cluster: str
    server_name: str
    """SNI and, without subjectAltNames, the name the certificate must match."""
    subject_alt_names: tuple[str, ...]
    """Checked after the handshake by `verify`; empty: nothing to check there."""
    ssl_context: ssl.SSLContext | None
    error: str | None = None
    """Why ssl_context is None."""
    files: tuple[str, ...] = ()
    """The files the context is built from (none: nothing to watch)."""
    stamps: tuple[FileStamp, ...] = ()
    """The files' stamps taken just before they were read, one per file."""
    h2_context: ssl.SSLContext | None = None
    """The same TLS offering ALPN `h2`, for the cluster's HTTP/2 endpoints (None when it has none)."""

    @classmethod
    def of(cls, cluster: Cluster) -> Origination | None:
        """The cluster's origination, or None when its policy originates no TLS (DISABLE, ISTIO_MUTUAL, unset);
        a file that fails to load is logged once here."""
        origination = cls.load(cluster)
        if origination is not None and origination.error is not None:
            log.error("%s", origination.error)
        return origination

    @classmethod
    def load(cls, cluster: Cluster) -> Origination | None:
        """`of` without logging: the caller reports a failure."""
        tls = cluster.traffic_policy.tls if cluster.traffic_policy is not None else None
        if tls is None or tls.mode not in ORIGINATION_MODES:
            return None
        server_name = tls.sni or cluster.host
        names = () if tls.insecure_skip_verify else tuple(tls.subject_alt_names)
        files = watched_files(tls)
        stamps = file_stamps(files)
        try:
            context = client_context(tls)
            h2 = client_context(tls, HTTP2_ALPN) if _may_call_http2(cluster) else None
        except ValueError as err:
            message = f"cluster {cluster.name}: {_UNAVAILABLE}{err}"
            return cls(cluster.name, server_name, names, None, message, files, stamps)
        return cls(cluster.name, server_name, names, context, None, files, stamps, h2)

    def context(self) -> ssl.SSLContext:
        if self.ssl_context is None:
            raise OriginationUnavailable(self.error or f"cluster {self.cluster}: TLS origination unavailable")
        return self.ssl_context

    def http2_context(self) -> ssl.SSLContext:
        """The context for HTTP/2 endpoints (ALPN `h2`); raises as `context` does."""
        self.context()
        if self.h2_context is None:
            raise OriginationUnavailable(f"cluster {self.cluster}: no HTTP/2 endpoint was known when TLS was set up")
        return self.h2_context

    def verify(self, ssl_object: Any) -> None:
        """After the handshake: the certificate carries one of subjectAltNames (none configured: nothing to do).

        `ssl_object` is the connection's ssl.SSLObject (or SSLSocket); raises OriginationRefused."""
        if not self.subject_alt_names:
            return
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        if not cert:
            raise OriginationRefused(f"cluster {self.cluster}: the upstream presented no verified certificate")
        sans = [(kind, value) for kind, value in cert.get("subjectAltName", ()) if kind in _SAN_TYPES]
        if not any(san_matches(kind, value, wanted) for kind, value in sans for wanted in self.subject_alt_names):
            presented = ", ".join(f"{kind}:{value}" for kind, value in sans) or "no SAN"
            raise OriginationRefused(
                f"cluster {self.cluster}: upstream certificate names {presented}, "
                f"none of subjectAltNames {list(self.subject_alt_names)}"
            )

    def verify_transport(self, transport: Any) -> None:
        """`verify` on a new connection's transport (an asyncio transport or None), which is aborted when the
        check fails, so no request byte is ever sent on it."""
        try:
            self.verify(transport.get_extra_info("ssl_object") if transport is not None else None)
        except BaseException:
            if transport is not None:
                transport.abort()
            raise


class OriginationWatch:
    """Keeps one cluster's Origination in step with its files; `check` is called once `due` has passed.

    Callers compare `due` with their clock's monotonic time per request and call `check` only past it, so
    the request path pays one comparison; a cluster without origination files has no watch at all."""

    def __init__(self, cluster: Cluster, current: Origination, clock: Clock, interval: float | None = None) -> None:
        """`interval`: seconds between checks (None: RELOAD_INTERVAL)."""
        self.current = current
        self._cluster = cluster
        self._clock = clock
        self._interval = RELOAD_INTERVAL if interval is None else interval
        self._seen = current.stamps
        self.due = clock.monotonic() + self._interval

    def check(self) -> Origination:
        """The Origination to use from now on: a new one when a file changed and loads; the last good one when
        the change does not load (logged once per change); the failed one while none ever loaded."""
        self.due = self._clock.monotonic() + self._interval
        if file_stamps(self.current.files) == self._seen:
            return self.current
        fresh = Origination.load(self._cluster)
        assert fresh is not None, "a watched cluster originates TLS"
        self._seen = fresh.stamps
        if fresh.ssl_context is not None:
            log.info("cluster %s: TLS origination files changed; new connections use them", fresh.cluster)
            self.current = fresh
        elif self.current.ssl_context is not None:
            reason = (fresh.error or "").removeprefix(f"cluster {fresh.cluster}: {_UNAVAILABLE}")
            log.error(
                "cluster %s: changed TLS origination files do not load, keeping the last good ones: %s",
                fresh.cluster,
                reason,
            )
        else:
            log.error("%s", fresh.error)
            self.current = fresh
        return self.current


def watched_files(tls: ClientTLSSettings) -> tuple[str, ...]:
    """The files `client_context` reads for these settings."""
    files: list[str] = []
    if not tls.insecure_skip_verify and tls.ca_certificates is not None:
        files.append(tls.ca_certificates)
    if tls.mode == TLSMode.MUTUAL:
        files.extend(path for path in (tls.client_certificate, tls.private_key) if path is not None)
    return tuple(files)


def file_stamps(files: tuple[str, ...]) -> tuple[FileStamp, ...]:
    stamps: list[FileStamp] = []
    for path in files:
        try:
            found = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((found.st_mtime_ns, found.st_size, found.st_ino))
    return tuple(stamps)


def san_matches(kind: str, presented: str, wanted: str) -> bool:
    """Exact match, case-insensitive for DNS names; a DNS SAN `*.example.com` covers one label (`a.example.com`)."""
    if kind != "DNS":
        return presented == wanted
    presented, wanted = presented.lower().rstrip("."), wanted.lower().rstrip(".")
    if presented == wanted:
        return True
    if not presented.startswith("*."):
        return False
    label, dot, rest = wanted.partition(".")
    return bool(label and dot) and rest == presented[2:]


def _may_call_http2(cluster: Cluster) -> bool:
    """Whether requests may go to the cluster's endpoints over HTTP/2 (a declared HTTP/2 port, or
    useClientProtocol passing an HTTP/2 caller's protocol on)."""
    policy = cluster.traffic_policy
    pool = policy.connection_pool if policy is not None else None
    client_protocol = pool is not None and pool.http is not None and bool(pool.http.use_client_protocol)
    return client_protocol or any(endpoint.http2 for endpoint in cluster.endpoints)


def client_context(tls: ClientTLSSettings, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A fresh TLS client context for SIMPLE / MUTUAL offering the `alpn` protocols (none: no ALPN); ValueError
    naming the field and file that failed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        context.set_alpn_protocols(list(alpn))
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = not tls.subject_alt_names
        context.verify_mode = ssl.CERT_REQUIRED
        if tls.ca_certificates is not None:
            cafile = tls.ca_certificates
            _load("caCertificates", cafile, lambda: context.load_verify_locations(cafile=cafile))
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls.mode == TLSMode.MUTUAL:
        certfile, keyfile = tls.client_certificate, tls.private_key
        assert certfile is not None and keyfile is not None, "the model requires both for MUTUAL"
        _load(
            "clientCertificate/privateKey",
            f"{certfile}, {keyfile}",
            lambda: context.load_cert_chain(certfile=certfile, keyfile=keyfile),
        )
    return context


def _load(field: str, path: str, load: Callable[[], None]) -> None:
    try:
        load()
    except ssl.SSLError as err:
        raise ValueError(f"{field} {path}: {err.reason or err}") from err
    except OSError as err:
        raise ValueError(f"{field} {path}: {err.strerror or err}") from err
