"""The sidecar's command line: defaults, environment, validation with flag names in the errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from services.proxy.main import add_arguments, read_token, settings_from
from services.proxy.registration import Registration


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    args = _parse("--service", "reviews", "--app-port", "9080")
    settings = settings_from(args)
    assert settings.namespace == "default"
    assert settings.account == "reviews"
    assert settings.version == "v1"
    assert (settings.inbound_port, settings.outbound_port, settings.admin_port, settings.health_port) == (
        15006,
        15001,
        15000,
        15021,
    )
    assert settings.state_dir == Path(".isthmus/proxy-reviews")
    assert settings.spiffe_id == "spiffe://cluster.local/ns/default/sa/reviews"


def test_environment_supplies_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_NATS_URL", "nats://10.0.0.5:4222")
    monkeypatch.setenv("ISTHMUS_CITADEL_ADDR", "10.0.0.6:15012")
    args = _parse("--service", "reviews", "--app-port", "9080")
    assert args.nats_url == "nats://10.0.0.5:4222"
    assert args.citadel_addr == "10.0.0.6:15012"


def test_bad_port_names_the_flag() -> None:
    with pytest.raises(ValueError, match="--inbound-port 70000"):
        settings_from(_parse("--service", "reviews", "--app-port", "9080", "--inbound-port", "70000"))


def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("abc.def.ghi\n")
    assert read_token(_parse("--service", "s", "--app-port", "1", "--token-file", str(token_file))) == "abc.def.ghi"
    assert read_token(_parse("--service", "s", "--app-port", "1", "--token", "t")) == "t"
    with pytest.raises(ValueError, match="--token-file"):
        read_token(_parse("--service", "s", "--app-port", "1", "--token-file", str(tmp_path / "missing")))


def test_token_and_token_file_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        _parse("--service", "s", "--app-port", "1", "--token", "t", "--token-file", str(tmp_path / "x"))


def test_upstreams_are_repeatable_and_reach_the_consul_meta() -> None:
    from services.proxy.registration import Registration
    from shared.consul import META_UPSTREAMS, labels_from_meta

    args = _parse("--service", "order", "--app-port", "9080", "--upstream", "Product", "--upstream", "payment,product")
    assert settings_from(args).upstreams == ("payment", "product")
    assert settings_from(_parse("--service", "order", "--app-port", "9080")).upstreams == ()
    registration = Registration("order-1", "order", "shop", "order", "v1", "127.0.0.1", 15006, 15021, 9080,
                                upstreams=("payment", "product"), admin_port=15000)  # fmt: skip
    meta = registration.definition()["Meta"]
    assert meta[META_UPSTREAMS] == "payment,product"
    assert labels_from_meta(meta) == {"app": "order", "version": "v1", "namespace": "shop", "service-account": "order"}


async def test_first_connect_gives_up_at_once_when_nats_is_down() -> None:
    import asyncio

    from services.local.processes import free_port
    from services.proxy.main import connect_bus

    async with asyncio.timeout(30):  # before the fix this never returned: nats-py retried forever
        assert await connect_bus(f"nats://127.0.0.1:{free_port()}", "test", first_try_only=True) is None


def test_locality_reaches_the_settings_and_the_consul_meta_as_a_label() -> None:
    from services.proxy.registration import Registration
    from shared.consul import labels_from_meta

    settings = settings_from(_parse("--service", "order", "--app-port", "9080", "--locality", "us-east1/us-east1-b"))
    assert settings.locality == "us-east1/us-east1-b"
    registration = Registration("order-1", "order", "shop", "order", "v1", "127.0.0.1", 15006, 15021, 9080,
                                locality=settings.locality)  # fmt: skip
    assert labels_from_meta(registration.meta())["locality"] == "us-east1/us-east1-b"
    assert "locality" not in Registration("o", "order", "shop", "order", "v1", "127.0.0.1", 1, 2, 3).meta()


@pytest.mark.parametrize("value", ["us/east/b/extra", "us//b", "us/*", "us east"])
def test_a_malformed_locality_is_refused_naming_the_flag(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse("--service", "order", "--app-port", "9080", "--locality", value)
    assert "--locality" in capsys.readouterr().err


def test_weight_reaches_the_settings_and_the_consul_registration() -> None:
    from services.proxy.registration import Registration

    assert settings_from(_parse("--service", "order", "--app-port", "9080")).weight == 1
    assert settings_from(_parse("--service", "order", "--app-port", "9080", "--weight", "3")).weight == 3
    plain = Registration("order-1", "order", "shop", "order", "v1", "127.0.0.1", 15006, 15021, 9080)
    assert "Weights" not in plain.definition()
    heavy = Registration("order-1", "order", "shop", "order", "v1", "127.0.0.1", 15006, 15021, 9080, weight=3)
    assert heavy.definition()["Weights"] == {"Passing": 3, "Warning": 1}


@pytest.mark.parametrize("value", ["0", "-2", "two", "2.5"])
def test_a_bad_weight_is_refused_naming_the_flag(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse("--service", "order", "--app-port", "9080", "--weight", value)
    assert "--weight" in capsys.readouterr().err


def test_a_gateway_needs_no_app_port_and_has_the_ingress_label_by_default() -> None:
    settings = settings_from(_parse("--service", "ingressgateway", "--namespace", "istio-system", "--gateway"))
    assert settings.gateway and settings.app_port == 0 and settings.gateway_bind is None
    assert settings.labels == (("istio", "ingressgateway"),)
    custom = _parse("--service", "edge", "--gateway", "--label", "tier=edge", "--gateway-bind", "0.0.0.0")
    assert settings_from(custom).labels == (("tier", "edge"),)
    assert settings_from(custom).gateway_bind == "0.0.0.0"


def test_gateway_flags_are_checked_by_name() -> None:
    with pytest.raises(ValueError, match="--app-port is required"):
        settings_from(_parse("--service", "reviews"))
    with pytest.raises(ValueError, match="--gateway-bind needs --gateway"):
        settings_from(_parse("--service", "reviews", "--app-port", "9080", "--gateway-bind", "0.0.0.0"))
    with pytest.raises(SystemExit):
        _parse("--service", "reviews", "--app-port", "9080", "--label", "version=v9")  # set by --version


def test_labels_are_registered_as_meta_and_the_meshs_own_keys_win() -> None:
    registration = Registration(
        proxy_id="gw-1",
        service="ingressgateway",
        namespace="istio-system",
        service_account="ingressgateway",
        version="v1",
        address="10.0.0.9",
        inbound_port=15006,
        health_port=15021,
        app_port=0,
        gateway=True,
        labels_extra=(("istio", "ingressgateway"),),
    )
    meta = registration.meta()
    assert meta["istio"] == "ingressgateway" and meta["isthmus-gateway"] == "true"
    assert "isthmus-app-port" not in meta
    assert [check["Name"] for check in registration.definition()["Checks"]] == ["sidecar ready"]
