"""The sidecar's telemetry flags: defaults as in Istio, errors naming the flag."""

from __future__ import annotations

import argparse

import pytest

from services.proxy.telemetry import flags


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    flags.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    settings = flags.settings_from(parse())
    assert settings.prometheus_port == 15090
    assert settings.access_log_file is None
    assert settings.tracing.endpoint is None and settings.tracing.sampling_percent == 1.0


def test_everything_set() -> None:
    settings = flags.settings_from(
        parse(
            "--prometheus-port", "off", "--access-log-file", "-", "--access-log-encoding", "json",
            "--access-log-errors-only", "--trace-endpoint", "127.0.0.1:4317", "--trace-sampling", "100",
        )
    )  # fmt: skip
    assert settings.prometheus_port is None
    assert settings.access_log_encoding == "JSON" and settings.access_log_errors_only
    assert settings.tracing.endpoint == "127.0.0.1:4317" and settings.tracing.sampling_percent == 100.0


def test_bad_values_name_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--prometheus-port", "99999")
    assert "--prometheus-port" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--trace-sampling"):
        flags.settings_from(parse("--trace-sampling", "150"))
