"""DestinationRule trafficPolicy.tls: which fields each mode accepts, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.model import DestinationRule
from shared.model.destination_rule import ClientTLSSettings, TLSMode


def _rule(tls: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "partner", "namespace": "shop"},
        "spec": {"host": "api.example.com", "trafficPolicy": {"tls": tls}},
    }


def _errors(tls: dict[str, Any]) -> dict[tuple[str | int, ...], str]:
    with pytest.raises(ValidationError) as info:
        DestinationRule.model_validate(_rule(tls))
    return {error["loc"]: error["msg"] for error in info.value.errors()}


TLS_LOC = ("spec", "trafficPolicy", "tls")


@pytest.mark.parametrize("mode", ["DISABLE", "SIMPLE", "ISTIO_MUTUAL"])
def test_every_mode_is_accepted(mode: str) -> None:
    rule = DestinationRule.model_validate(_rule({"mode": mode}))
    assert rule.spec.traffic_policy is not None and rule.spec.traffic_policy.tls is not None
    assert rule.spec.traffic_policy.tls.mode == TLSMode(mode)


def test_simple_and_mutual_take_istio_field_names() -> None:
    tls = ClientTLSSettings.model_validate(
        {
            "mode": "MUTUAL",
            "sni": "api.example.com",
            "caCertificates": "/etc/partner/ca.pem",
            "clientCertificate": "/etc/partner/client.pem",
            "privateKey": "/etc/partner/client-key.pem",
            "subjectAltNames": ["api.example.com", "spiffe://partner/api"],
        }
    )
    assert tls.sni == "api.example.com" and tls.ca_certificates == "/etc/partner/ca.pem"
    assert (tls.client_certificate, tls.private_key) == ("/etc/partner/client.pem", "/etc/partner/client-key.pem")
    assert tls.subject_alt_names == ["api.example.com", "spiffe://partner/api"]
    assert tls.insecure_skip_verify is False
    dumped = tls.model_dump(by_alias=True, exclude_none=True)
    assert dumped["caCertificates"] == "/etc/partner/ca.pem" and dumped["subjectAltNames"][1] == "spiffe://partner/api"
    assert ClientTLSSettings.model_validate(dumped) == tls


def test_a_tls_block_without_mode_is_disable() -> None:
    assert ClientTLSSettings.model_validate({}).mode == TLSMode.DISABLE


@pytest.mark.parametrize("missing", ["clientCertificate", "privateKey"])
def test_mutual_requires_both_certificate_files(missing: str) -> None:
    tls = {"mode": "MUTUAL", "clientCertificate": "/c.pem", "privateKey": "/k.pem"}
    del tls[missing]
    assert f"mode MUTUAL requires {missing}" in _errors(tls)[TLS_LOC]


@pytest.mark.parametrize("mode", ["SIMPLE", "DISABLE", "ISTIO_MUTUAL"])
@pytest.mark.parametrize("field", ["clientCertificate", "privateKey"])
def test_client_certificate_files_belong_to_mutual_only(mode: str, field: str) -> None:
    message = _errors({"mode": mode, field: "/etc/partner/client.pem"})[TLS_LOC]
    assert f"{field} is only used with mode MUTUAL, not {mode}" in message


@pytest.mark.parametrize("mode", ["DISABLE", "ISTIO_MUTUAL"])
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sni", "api.example.com"),
        ("caCertificates", "/etc/ca.pem"),
        ("subjectAltNames", ["api.example.com"]),
        ("insecureSkipVerify", True),
    ],
)
def test_origination_fields_are_refused_without_origination(mode: str, field: str, value: object) -> None:
    message = _errors({"mode": mode, field: value})[TLS_LOC]
    assert f"{field} is only used with mode SIMPLE or MUTUAL, not {mode}" in message


@pytest.mark.parametrize("field", ["credentialName", "caCrl"])
def test_credential_name_and_crl_are_not_supported(field: str) -> None:
    message = _errors({"mode": "SIMPLE", field: "partner-credential"})[(*TLS_LOC, field)]
    assert f"{field} is not supported: give file paths in caCertificates/clientCertificate/privateKey" in message


@pytest.mark.parametrize("field", ["caCertificates", "clientCertificate", "privateKey"])
def test_certificate_paths_are_absolute(field: str) -> None:
    tls = {"mode": "MUTUAL", "clientCertificate": "/c.pem", "privateKey": "/k.pem", field: "certs/x.pem"}
    assert "'certs/x.pem' is not an absolute file path" in _errors(tls)[(*TLS_LOC, field)]


@pytest.mark.parametrize(("field", "value"), [("caCertificates", "/etc/ca.pem"), ("subjectAltNames", ["a.test"])])
def test_insecure_skip_verify_refuses_what_it_would_ignore(field: str, value: object) -> None:
    message = _errors({"mode": "SIMPLE", "insecureSkipVerify": True, field: value})[TLS_LOC]
    assert f"{field} has no effect with insecureSkipVerify: true" in message


def test_empty_sni_and_san_entries_are_refused() -> None:
    assert _errors({"mode": "SIMPLE", "sni": ""})[(*TLS_LOC, "sni")]
    assert _errors({"mode": "SIMPLE", "subjectAltNames": ["a.test", ""]})[(*TLS_LOC, "subjectAltNames", 1)]


def test_port_level_and_subset_policies_are_checked_too() -> None:
    doc = _rule({"mode": "SIMPLE"})
    doc["spec"]["trafficPolicy"]["portLevelSettings"] = [{"port": {"number": 443}, "tls": {"mode": "MUTUAL"}}]
    doc["spec"]["subsets"] = [{"name": "v1", "trafficPolicy": {"tls": {"mode": "DISABLE", "sni": "x.test"}}}]
    with pytest.raises(ValidationError) as info:
        DestinationRule.model_validate(doc)
    messages = {error["loc"]: error["msg"] for error in info.value.errors()}
    assert "requires clientCertificate" in messages[("spec", "trafficPolicy", "portLevelSettings", 0, "tls")]
    assert "sni is only used with mode SIMPLE or MUTUAL" in messages[("spec", "subsets", 0, "trafficPolicy", "tls")]
