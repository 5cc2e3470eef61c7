"""Citadel's certificate authority: signs workload CSRs into short-lived SVIDs, with its own root or a plug-in CA.

Self-signed mode: ca-cert.pem is a root citadel created; leaves chain directly to it. Plug-in mode (Istio's
cacerts layout, see ca_store.py): ca-cert.pem is an intermediate issued under root-cert.pem; leaves are sent
with the intermediate chain (leaf, ca-cert, further intermediates; never the root) and the trust bundle is
root-cert.pem. In both modes extra-roots.pem adds roots to the bundle: root rotation publishes the new root
there first (every proxy trusts both), then swaps the CA files and keeps the old root there while workloads
renew (a certificate issued directly by a root in that file still authenticates a renewal), then removes it.
Plug-in files replaced while citadel runs (reload.py) give a new CertificateAuthority that keeps the replaced
one as `previous` until `trusted_until`: its roots stay in the bundle, and certificates and bootstrap tokens it
signed still authenticate, so workloads renew onto the new CA without a failed request.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.citadel.ca_store import CaFiles, CaStateError, read_ca_files, write_ca_files
from services.citadel.csr import CsrRefused, IdentityMismatch, check_identity, parse_csr
from shared.clock import SYSTEM_CLOCK, Clock
from shared.identity import SpiffeId
from shared.identity.spiffe import SCHEME
from shared.identity.svid import new_private_key, private_key_pem

log = logging.getLogger(__name__)

ROOT_TTL_SECONDS = 10 * 365 * 24 * 3600
DEFAULT_TTL_SECONDS = 24 * 3600
MAX_TTL_SECONDS = 30 * 24 * 3600
BACKDATE_SECONDS = 60
"""Leaves start a minute in the past so small clock skew between VMs does not reject a fresh cert."""


@dataclass(frozen=True, slots=True)
class TtlPolicy:
    """Lifetime of issued leaves: `default_seconds` when the request says 0, never more than `max_seconds`."""

    default_seconds: int = DEFAULT_TTL_SECONDS
    max_seconds: int = MAX_TTL_SECONDS

    def __post_init__(self) -> None:
        if self.default_seconds <= 0 or self.max_seconds <= 0:
            raise ValueError("default and max TTL must be positive")
        if self.default_seconds > self.max_seconds:
            raise ValueError(f"default TTL {self.default_seconds}s exceeds max TTL {self.max_seconds}s")


DEFAULT_TTL_POLICY = TtlPolicy()


@dataclass(frozen=True, slots=True)
class PreviousCa:
    """A CA replaced at run time, still trusted (bundle, renewals, tokens) until `trusted_until` (Unix time)."""

    signer: x509.Certificate
    roots: tuple[x509.Certificate, ...]
    trusted_until: float


class CertificateAuthority:
    """Holds the root key in memory; everything it signs chains directly to the root."""

    def __init__(
        self,
        root_cert: x509.Certificate,
        root_key: ec.EllipticCurvePrivateKey,
        trust_domain: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        ttl: TtlPolicy = DEFAULT_TTL_POLICY,
        intermediates: Sequence[x509.Certificate] = (),
        roots: Sequence[x509.Certificate] = (),
        extra_roots: Sequence[x509.Certificate] = (),
        previous: Sequence[PreviousCa] = (),
    ) -> None:
        """`root_cert`/`root_key` sign (a root, or a plug-in intermediate); `roots` defaults to `root_cert`."""
        self.root_cert = root_cert
        self.root_key = root_key
        self.trust_domain = checked_trust_domain(trust_domain)
        self.clock = clock
        self.ttl = ttl
        self.intermediates = tuple(intermediates)
        self.roots = tuple(roots) or (root_cert,)
        self.extra_roots = tuple(extra_roots)
        self.plugged = bool(roots)
        self.previous = tuple(previous)

    def live_previous(self) -> tuple[PreviousCa, ...]:
        """Replaced CAs not yet retired."""
        now = self.clock.wall()
        return tuple(p for p in self.previous if now < p.trusted_until)

    def succeeding(self, replaced: CertificateAuthority, retain_seconds: float) -> CertificateAuthority:
        """This CA taking over from `replaced`, which stays trusted for `retain_seconds` (with its own
        not yet retired predecessors)."""
        kept = PreviousCa(replaced.root_cert, replaced.roots, self.clock.wall() + retain_seconds)
        return CertificateAuthority(
            self.root_cert,
            self.root_key,
            self.trust_domain,
            clock=self.clock,
            ttl=self.ttl,
            intermediates=self.intermediates,
            roots=self.roots if self.plugged else (),
            extra_roots=self.extra_roots,
            previous=(kept, *replaced.live_previous()),
        )

    def without_previous(self) -> CertificateAuthority:
        """This CA trusting no replaced CA any more (the operator's retire-now)."""
        return CertificateAuthority(
            self.root_cert,
            self.root_key,
            self.trust_domain,
            clock=self.clock,
            ttl=self.ttl,
            intermediates=self.intermediates,
            roots=self.roots if self.plugged else (),
            extra_roots=self.extra_roots,
        )

    @property
    def renewal_issuers(self) -> tuple[x509.Certificate, ...]:
        """Certificates that may have directly issued a certificate presented for renewal."""
        return (self.root_cert, *self.extra_roots, *(p.signer for p in self.live_previous()))

    def token_keys(self) -> tuple[ec.EllipticCurvePublicKey, ...]:
        """Public keys whose bootstrap tokens are accepted: this CA's, then those of replaced CAs still trusted."""
        previous = [p.signer.public_key() for p in self.live_previous()]
        return (self.root_key.public_key(), *(k for k in previous if isinstance(k, ec.EllipticCurvePublicKey)))

    def chain_after_leaf(self) -> tuple[bytes, ...]:
        """PEM certificates sent after each leaf: none for a self-signed root, the intermediates for a plug-in CA."""
        if not self.plugged:
            return ()
        return tuple(c.public_bytes(serialization.Encoding.PEM) for c in (self.root_cert, *self.intermediates))

    def signing_key_id(self) -> bytes:
        try:
            return self.root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            return x509.SubjectKeyIdentifier.from_public_key(self.root_cert.public_key()).digest

    def root_not_after(self) -> float:
        """Earliest expiry among the roots in use (for the root expiry metric)."""
        return min(root.not_valid_after_utc.timestamp() for root in self.roots)

    @classmethod
    def create(
        cls, trust_domain: str, *, clock: Clock = SYSTEM_CLOCK, ttl: TtlPolicy = DEFAULT_TTL_POLICY
    ) -> CertificateAuthority:
        """A fresh in-memory root (ECDSA P-256, ten years) for `trust_domain`."""
        checked_trust_domain(trust_domain)
        key = new_private_key()
        now = _utc(clock.wall())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "isthmus"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"isthmus root CA {trust_domain}"),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(seconds=BACKDATE_SECONDS))
            .not_valid_after(now + datetime.timedelta(seconds=ROOT_TTL_SECONDS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"{SCHEME}{trust_domain}")]),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key, trust_domain, clock=clock, ttl=ttl)

    @classmethod
    def load(
        cls,
        state_dir: Path,
        *,
        clock: Clock = SYSTEM_CLOCK,
        ttl: TtlPolicy = DEFAULT_TTL_POLICY,
        trust_domain: str | None = None,
    ) -> CertificateAuthority:
        """The CA persisted in `state_dir`; its trust domain is read from the certificates (else `trust_domain`).
        Raises CaStateError."""
        files = read_ca_files(state_dir)
        if files is None:
            raise CaStateError(f"no CA in {state_dir}; start citadel with --state-dir {state_dir} first")
        return cls._from_files(files, state_dir, clock, ttl, trust_domain)

    @classmethod
    def load_or_create(
        cls, state_dir: Path, trust_domain: str, *, clock: Clock = SYSTEM_CLOCK, ttl: TtlPolicy = DEFAULT_TTL_POLICY
    ) -> CertificateAuthority:
        """Reload the root from `state_dir`, or create and persist one (key 0600, directory 0700)."""
        files = read_ca_files(state_dir)
        if files is None:
            ca = cls.create(trust_domain, clock=clock, ttl=ttl)
            write_ca_files(state_dir, CaFiles(cert_pem=ca.trust_bundle_pem(), key_pem=ca.key_pem()))
            log.info("created root CA for %s in %s", trust_domain, state_dir)
            return ca
        ca = cls._from_files(files, state_dir, clock, ttl, trust_domain)
        if ca.trust_domain != trust_domain:
            raise CaStateError(f"the CA in {state_dir} is for trust domain {ca.trust_domain!r}, not {trust_domain!r}")
        return ca

    @classmethod
    def _from_files(
        cls, files: CaFiles, state_dir: Path, clock: Clock, ttl: TtlPolicy, trust_domain: str | None = None
    ) -> CertificateAuthority:
        try:
            cert = x509.load_pem_x509_certificate(files.cert_pem)
            key = serialization.load_pem_private_key(files.key_pem, password=None)
            chain = x509.load_pem_x509_certificates(files.chain_pem) if files.chain_pem else []
            roots = x509.load_pem_x509_certificates(files.root_pem) if files.root_pem else []
            extra = x509.load_pem_x509_certificates(files.extra_roots_pem) if files.extra_roots_pem else []
        except ValueError as error:
            raise CaStateError(f"the CA files in {state_dir} are not valid PEM: {error}") from error
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise CaStateError(f"the CA key in {state_dir} does not belong to its certificate")
        if cert.not_valid_after_utc <= _utc(clock.wall()):
            raise CaStateError(f"the CA certificate in {state_dir} expired at {cert.not_valid_after_utc}")
        if not roots:
            own = _trust_domain_of_root(cert, state_dir)
            return cls(cert, key, own, clock=clock, ttl=ttl, extra_roots=extra)
        intermediates = [c for c in chain if c != cert and c not in roots]
        _check_plugin_chain(cert, intermediates, roots, state_dir)
        domain = _spiffe_trust_domain(cert) or _spiffe_trust_domain(roots[0]) or trust_domain
        if domain is None:
            raise CaStateError(
                f"the plug-in CA in {state_dir} names no spiffe://<trust-domain>; pass the trust domain explicitly"
            )
        return cls(cert, key, domain, clock=clock, ttl=ttl, intermediates=intermediates, roots=roots, extra_roots=extra)

    def trust_bundle_pem(self) -> bytes:
        """Every root workloads must trust: the CA's root(s), extra-roots.pem, then the roots of replaced CAs still
        trusted; each once."""
        seen: list[bytes] = []
        retained = [root for p in self.live_previous() for root in p.roots]
        for root in (*self.roots, *self.extra_roots, *retained):
            pem = root.public_bytes(serialization.Encoding.PEM)
            if pem not in seen:
                seen.append(pem)
        return b"".join(seen)

    def key_pem(self) -> bytes:
        return private_key_pem(self.root_key)

    def effective_ttl(self, requested_seconds: int) -> int:
        """0 means the default; anything above the maximum is cut down to it; negative is refused."""
        if requested_seconds < 0:
            raise CsrRefused(f"ttl_seconds is {requested_seconds}; it must be 0 (default) or positive")
        return min(requested_seconds or self.ttl.default_seconds, self.ttl.max_seconds)

    def sign_csr(self, csr_pem: bytes, identity: SpiffeId, ttl_seconds: int) -> tuple[bytes, ...]:
        """Sign a CSR for `identity` (its only SAN must be that SPIFFE URI); PEM chain, leaf first."""
        if identity.trust_domain != self.trust_domain:
            raise IdentityMismatch(f"{identity.uri} is not in trust domain {self.trust_domain}")
        parsed = parse_csr(csr_pem)
        check_identity(parsed, identity)
        ttl = self.effective_ttl(ttl_seconds)
        leaf = self._issue(
            parsed.public_key,
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
            ttl,
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        )
        return (leaf.public_bytes(serialization.Encoding.PEM), *self.chain_after_leaf())

    def issue_server_certificate(
        self, dns_names: Sequence[str], ip_addresses: Sequence[str], ttl_seconds: int
    ) -> tuple[bytes, tuple[bytes, ...]]:
        """A fresh key and a serverAuth certificate for citadel itself: (key PEM, chain PEM leaf first)."""
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        key = new_private_key()
        leaf = self._issue(
            key.public_key(),
            x509.SubjectAlternativeName(names),
            min(ttl_seconds, _remaining_seconds(self.root_cert, self.clock)),
            [ExtendedKeyUsageOID.SERVER_AUTH],
        )
        return private_key_pem(key), (leaf.public_bytes(serialization.Encoding.PEM), *self.chain_after_leaf())

    def _issue(
        self,
        public_key: CertificatePublicKeyTypes,
        san: x509.SubjectAlternativeName,
        ttl_seconds: int,
        usages: list[x509.ObjectIdentifier],
    ) -> x509.Certificate:
        now = _utc(self.clock.wall())
        not_after = min(now + datetime.timedelta(seconds=ttl_seconds), self.root_cert.not_valid_after_utc)
        issuer_ski = x509.SubjectKeyIdentifier(self.signing_key_id())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.root_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(seconds=BACKDATE_SECONDS))
            .not_valid_after(not_after)
            # An empty subject makes the SAN the certificate's only name, so RFC 5280 wants it critical.
            .add_extension(san, critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False)
        )
        return builder.sign(self.root_key, hashes.SHA256())


def checked_trust_domain(trust_domain: str) -> str:
    """`trust_domain` if it is a valid SPIFFE trust domain; InvalidSpiffeId (a ValueError) naming it if not."""
    return SpiffeId(trust_domain, "ns", "sa").trust_domain


def _utc(epoch_seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch_seconds, tz=datetime.UTC)


def _remaining_seconds(cert: x509.Certificate, clock: Clock) -> int:
    return max(int(cert.not_valid_after_utc.timestamp() - clock.wall()), 0)


def _spiffe_trust_domain(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = [uri for uri in san.get_values_for_type(x509.UniformResourceIdentifier) if uri.startswith(SCHEME)]
    if len(uris) != 1 or "/" in uris[0][len(SCHEME) :]:
        return None
    return uris[0][len(SCHEME) :]


def _check_plugin_chain(
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    state_dir: Path,
) -> None:
    """ca-cert.pem must be a CA certificate chaining through cert-chain.pem to a root in root-cert.pem."""
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise CaStateError(f"{state_dir}/ca-cert.pem is not a CA certificate (basicConstraints CA:FALSE)")
    except x509.ExtensionNotFound:
        raise CaStateError(f"{state_dir}/ca-cert.pem has no basicConstraints; it cannot sign") from None
    current = cert
    for parent in intermediates:
        try:
            current.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise CaStateError(
                f"{state_dir}/cert-chain.pem: {current.subject.rfc4514_string()} is not issued by the next "
                f"certificate {parent.subject.rfc4514_string()}"
            ) from None
        current = parent
    for root in roots:
        try:
            current.verify_directly_issued_by(root)
            return
        except (ValueError, TypeError, InvalidSignature):
            continue
    raise CaStateError(f"{state_dir}: ca-cert.pem does not chain to root-cert.pem through cert-chain.pem")


def _trust_domain_of_root(cert: x509.Certificate, state_dir: Path) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CaStateError(f"the root in {state_dir} has no spiffe://<trust-domain> URI SAN") from None
    uris = [uri for uri in san.get_values_for_type(x509.UniformResourceIdentifier) if uri.startswith(SCHEME)]
    if len(uris) != 1 or "/" in uris[0][len(SCHEME) :]:
        raise CaStateError(f"the root in {state_dir} must carry exactly one spiffe://<trust-domain> URI")
    return uris[0][len(SCHEME) :]


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
