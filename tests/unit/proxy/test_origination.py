"""TLS origination of a cluster: the client context from its files, failures that name them, the SAN check."""

from __future__ import annotations

import logging
import random
import ssl
from pathlib import Path
from typing import Any

import pytest

from services.proxy.balancer import ClusterRuntimes
from services.proxy.errors import UpstreamConnectFailure
from services.proxy.origination import Origination, OriginationRefused, OriginationUnavailable, san_matches
from services.proxy.tls import TlsContexts
from services.proxy.upstream import PoolSettings, UpstreamPools
from shared.model.proxy_config import Cluster, Endpoint
from tests.origination_pki import SERVER_NAME, PkiFiles, write_pki

CLUSTER = "outbound|443||api.example.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return write_pki(tmp_path_factory.mktemp("pki"))


def _cluster(tls: dict[str, Any] | None, host: str = SERVER_NAME, version: int = 0) -> Cluster:
    return Cluster.model_validate(
        {
            "name": CLUSTER,
            "host": host,
            "port": 443,
            "endpoints": [{"address": "127.0.0.1", "port": 8443 + version}],
            "trafficPolicy": {"tls": tls} if tls is not None else None,
        }
    )


def _origination(tls: dict[str, Any], host: str = SERVER_NAME) -> Origination:
    found = Origination.of(_cluster(tls, host))
    assert found is not None
    return found


@pytest.mark.parametrize("tls", [None, {"mode": "DISABLE"}, {"mode": "ISTIO_MUTUAL"}, {}])
def test_no_origination_without_simple_or_mutual(tls: dict[str, Any] | None) -> None:
    assert Origination.of(_cluster(tls)) is None


def test_simple_with_ca_file_verifies_the_host_name(pki: PkiFiles) -> None:
    found = _origination({"mode": "SIMPLE", "caCertificates": str(pki.ca)})
    context = found.context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert found.server_name == SERVER_NAME and found.subject_alt_names == ()
    assert len(context.get_ca_certs()) == 1


def test_sni_overrides_the_cluster_host(pki: PkiFiles) -> None:
    found = _origination({"mode": "SIMPLE", "caCertificates": str(pki.ca), "sni": "edge.example.test"}, "partner")
    assert found.server_name == "edge.example.test"


def test_without_ca_file_the_system_trust_store_is_used() -> None:
    context = _origination({"mode": "SIMPLE"}).context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_subject_alt_names_turn_the_handshake_name_check_into_a_san_check(pki: PkiFiles) -> None:
    found = _origination({"mode": "SIMPLE", "caCertificates": str(pki.ca), "subjectAltNames": ["a.test", "b.test"]})
    assert not found.context().check_hostname and found.context().verify_mode == ssl.CERT_REQUIRED
    assert found.subject_alt_names == ("a.test", "b.test")


def test_insecure_skip_verify_verifies_nothing() -> None:
    found = _origination({"mode": "SIMPLE", "insecureSkipVerify": True})
    assert found.context().verify_mode == ssl.CERT_NONE and not found.context().check_hostname


def test_mutual_loads_the_client_certificate(pki: PkiFiles) -> None:
    tls = {
        "mode": "MUTUAL",
        "caCertificates": str(pki.ca),
        "clientCertificate": str(pki.client_cert),
        "privateKey": str(pki.client_key),
    }
    assert _origination(tls).error is None


def test_each_cluster_policy_gets_its_own_context(pki: PkiFiles) -> None:
    tls = {"mode": "SIMPLE", "caCertificates": str(pki.ca)}
    assert _origination(tls).context() is not _origination(tls).context()


def test_a_missing_file_leaves_the_cluster_unusable_with_one_clear_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "gone.pem"
    with caplog.at_level(logging.ERROR, logger="services.proxy.origination"):
        found = _origination({"mode": "SIMPLE", "caCertificates": str(missing)})
    assert found.ssl_context is None
    expected = f"cluster {CLUSTER}: TLS origination unavailable: caCertificates {missing}: No such file or directory"
    assert found.error == expected
    assert [record.getMessage() for record in caplog.records] == [expected]
    with pytest.raises(OriginationUnavailable, match="No such file") as refused:
        found.context()
    assert isinstance(refused.value, UpstreamConnectFailure)
    assert (refused.value.status, refused.value.flag) == (503, "UF")


def test_a_file_without_certificates_is_named(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    found = _origination({"mode": "SIMPLE", "caCertificates": str(garbage)})
    assert found.error is not None and f"caCertificates {garbage}: " in found.error


def test_a_key_that_does_not_match_the_certificate_is_named(pki: PkiFiles, tmp_path: Path) -> None:
    other = write_pki(tmp_path / "other")
    tls = {"mode": "MUTUAL", "clientCertificate": str(pki.client_cert), "privateKey": str(other.client_key)}
    found = _origination(tls)
    assert found.error is not None and "clientCertificate/privateKey" in found.error
    assert str(pki.client_cert) in found.error


class _PeerCert:
    def __init__(self, cert: dict[str, Any] | None) -> None:
        self._cert = cert

    def getpeercert(self) -> dict[str, Any] | None:
        return self._cert


def test_subject_alt_names_check_accepts_any_one_name() -> None:
    found = _origination({"mode": "SIMPLE", "subjectAltNames": ["other.test", "spiffe://partner/api"]})
    found.verify(_PeerCert({"subjectAltName": (("DNS", "api.example.test"), ("URI", "spiffe://partner/api"))}))
    found.verify(_PeerCert({"subjectAltName": (("DNS", "other.test"),)}))


def test_subject_alt_names_check_fails_closed() -> None:
    found = _origination({"mode": "SIMPLE", "subjectAltNames": ["other.test"]})
    with pytest.raises(
        OriginationRefused, match=r"names DNS:api.example.test, none of subjectAltNames \['other.test'\]"
    ):
        found.verify(_PeerCert({"subjectAltName": (("DNS", "api.example.test"),)}))
    with pytest.raises(OriginationRefused, match="no verified certificate"):
        found.verify(_PeerCert({}))
    with pytest.raises(OriginationRefused, match="no verified certificate"):
        found.verify(None)
    with pytest.raises(OriginationRefused, match="no SAN"):
        found.verify(_PeerCert({"subject": ((("commonName", "other.test"),),)}))


def test_without_subject_alt_names_there_is_nothing_to_check_after_the_handshake() -> None:
    _origination({"mode": "SIMPLE"}).verify(None)


@pytest.mark.parametrize(
    ("kind", "presented", "wanted", "matches"),
    [
        ("DNS", "api.example.test", "api.example.test", True),
        ("DNS", "API.Example.test", "api.example.test", True),
        ("DNS", "*.example.test", "api.example.test", True),
        ("DNS", "*.example.test", "a.b.example.test", False),
        ("DNS", "*.example.test", "example.test", False),
        ("DNS", "api.example.test", "*.example.test", False),
        ("URI", "spiffe://partner/api", "spiffe://partner/api", True),
        ("URI", "spiffe://partner/api", "spiffe://partner/API", False),
        ("IP Address", "10.0.0.1", "10.0.0.1", True),
    ],
)
def test_san_matching(kind: str, presented: str, wanted: str, matches: bool) -> None:
    assert san_matches(kind, presented, wanted) is matches


def test_the_cluster_runtime_carries_the_origination_once_per_policy(pki: PkiFiles) -> None:
    runtimes = ClusterRuntimes(rng=random.Random(1))
    tls = {"mode": "SIMPLE", "caCertificates": str(pki.ca)}
    first = runtimes.get(_cluster(tls)).pool.origination
    assert first is not None and first.error is None
    assert runtimes.get(_cluster(tls, version=1)).pool.origination is first  # same policy, new version: kept
    assert runtimes.get(_cluster({"mode": "DISABLE"})).pool.origination is None


def test_a_broken_origination_is_built_again_by_the_next_config_version(tmp_path: Path) -> None:
    runtimes = ClusterRuntimes(rng=random.Random(1))
    ca = tmp_path / "late" / "ca.pem"
    tls = {"mode": "SIMPLE", "caCertificates": str(ca)}
    broken = runtimes.get(_cluster(tls))
    assert not broken.pool.usable
    write_pki(ca.parent)
    fixed = runtimes.get(_cluster(tls, version=1))
    assert fixed.pool.usable and fixed.pool.origination is not None and fixed.pool.origination.error is None


async def test_pools_answer_the_origination_context_for_endpoints_without_identity(pki: PkiFiles) -> None:
    found = _origination({"mode": "SIMPLE", "caCertificates": str(pki.ca)})
    settings = PoolSettings(CLUSTER, origination=found)
    plain = Endpoint(address="127.0.0.1", port=8443)
    meshed = Endpoint(address="127.0.0.1", port=8443, identity="spiffe://cluster.local/ns/shop/sa/api")
    pools = UpstreamPools(TlsContexts())
    try:
        _, ssl_arg = pools.session_for(plain, settings)
        assert ssl_arg is found.context()
        assert pools.server_name(plain, settings) == SERVER_NAME
        assert pools.server_name(meshed, settings) is None
        with pytest.raises(RuntimeError, match="no workload certificate"):  # mesh mTLS, never the origination
            pools.session_for(meshed, settings)
        broken = PoolSettings(CLUSTER, origination=Origination(CLUSTER, SERVER_NAME, (), None, "caCertificates x"))
        with pytest.raises(OriginationUnavailable, match="caCertificates x"):
            pools.session_for(plain, broken)
        lean = pools.lean_for(plain, settings)
        assert lean is not None and lean is not pools.lean_for(plain, PoolSettings(CLUSTER))
    finally:
        await pools.close()
