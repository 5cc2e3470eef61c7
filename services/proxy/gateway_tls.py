"""The certificates a gateway's HTTPS server presents: its own, and with several servers merged on its port one
per server, chosen by the client's SNI; the files re-read when they change.

Each certificate gets its own SSLContext (SIMPLE: certificate and key; MUTUAL: also the client CAs, a client
certificate required; TLS versions as set). The listener's context is the first server's; when several are
configured, its SNI callback switches the handshake to the context of the first entry whose hosts cover the
name the client asked for (`*` and `*.suffix` as for routes); no SNI, or none covering it, keeps the first.
`reload_changed` compares each entry's files (mtime, size, inode) with what was loaded and loads changed ones
into the same context, so new handshakes use them and a rewrite that does not load keeps the last good one.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from services.proxy.origination import FileStamp, file_stamps
from services.proxy.sni import covers
from shared.model.gateway import ServerTlsMode, TlsVersion
from shared.model.proxy_config import GatewayTls, SniTls

_VERSIONS = {TlsVersion.TLSV1_2: ssl.TLSVersion.TLSv1_2, TlsVersion.TLSV1_3: ssl.TLSVersion.TLSv1_3}


class CertificateFilesError(ValueError):
    """A server's certificate, key or CA file does not load; the message names the file and why."""


def _reason(err: OSError | ssl.SSLError) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


def load_files(context: ssl.SSLContext, tls: GatewayTls) -> None:
    try:
        context.load_cert_chain(tls.server_certificate, tls.private_key)
    except (OSError, ssl.SSLError) as err:
        raise CertificateFilesError(
            f"serverCertificate {tls.server_certificate} / privateKey {tls.private_key}: {_reason(err)}"
        ) from err
    if tls.mode == ServerTlsMode.MUTUAL and tls.ca_certificates is not None:
        try:
            context.load_verify_locations(cafile=tls.ca_certificates)
        except (OSError, ssl.SSLError) as err:
            raise CertificateFilesError(f"caCertificates {tls.ca_certificates}: {_reason(err)}") from err
        context.verify_mode = ssl.CERT_REQUIRED


def server_context(tls: GatewayTls, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A context for one certificate, offering the `alpn` protocols; raises CertificateFilesError naming the file
    that does not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if tls.min_protocol_version in _VERSIONS:
        context.minimum_version = _VERSIONS[tls.min_protocol_version]
    if tls.max_protocol_version in _VERSIONS:
        context.maximum_version = _VERSIONS[tls.max_protocol_version]
    load_files(context, tls)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def _stamp(tls: GatewayTls) -> tuple[FileStamp, ...]:
    files = (tls.server_certificate, tls.private_key, tls.ca_certificates)
    return file_stamps(tuple(path for path in files if path is not None))


@dataclass
class _Certificate:
    hosts: tuple[str, ...]
    tls: GatewayTls
    context: ssl.SSLContext
    stamp: tuple[FileStamp, ...]


class ServerCertificates:
    """The contexts of one HTTPS server; `context` is the listener's. Raises CertificateFilesError when a file of
    any certificate does not load (the server then stays closed until they do)."""

    def __init__(self, default: GatewayTls, by_sni: list[SniTls], alpn: tuple[str, ...] = ()) -> None:
        """`alpn`: the protocols offered to clients (an HTTPS server's; none for TLS terminated into TCP)."""
        entries = by_sni or [SniTls(hosts=["*"], tls=default)]
        built: dict[GatewayTls, ssl.SSLContext] = {}
        self._certificates: list[_Certificate] = []
        for entry in entries:
            stamp = _stamp(entry.tls)
            if entry.tls not in built:
                built[entry.tls] = server_context(entry.tls, alpn)
            self._certificates.append(_Certificate(tuple(entry.hosts), entry.tls, built[entry.tls], stamp))
        self.context = built[default] if default in built else server_context(default, alpn)
        if len(built) > 1:
            self.context.sni_callback = self._choose

    def _choose(self, ssl_object: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
        if name is None:
            return
        name = name.lower().rstrip(".")
        for certificate in self._certificates:
            if any(covers(host, name) for host in certificate.hosts):
                if certificate.context is not self.context:
                    ssl_object.context = certificate.context
                return

    def reload_changed(self) -> list[str]:
        """Loads every certificate whose files changed; what did not load (its last good one stays) is listed."""
        failed = []
        for certificate in self._certificates:
            stamp = _stamp(certificate.tls)
            if stamp == certificate.stamp:
                continue
            certificate.stamp = stamp
            try:
                load_files(certificate.context, certificate.tls)
            except CertificateFilesError as err:
                failed.append(str(err))
        return failed
