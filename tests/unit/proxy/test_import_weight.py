"""What a sidecar loads: features that are off cost no imports, control-plane servers are never loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

NEVER_LOADED_BY_PROXY = (
    "opentelemetry.sdk",
    "opentelemetry.exporter",
    "services.citadel",
    "services.galley",
    "services.pilot",
    "services.cli.token_cmds",
    "services.cli.vm_cmds",
)


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(result.stdout.splitlines()[-1]))


def under(modules: set[str], package: str) -> list[str]:
    return sorted(name for name in modules if name == package or name.startswith(package + "."))


@pytest.mark.parametrize(
    "code",
    [
        "import services.proxy.main",
        "from services.cli.main import build_parser_for\n"
        "build_parser_for(['proxy', 'run']).parse_args(['proxy', 'run', '--service', 'a', '--app-port', '1'])",
    ],
)
def test_a_sidecar_without_tracing_loads_no_sdk_and_no_control_plane(code: str) -> None:
    modules = loaded_after(code)
    assert "services.proxy.main" in modules
    for package in NEVER_LOADED_BY_PROXY:
        assert under(modules, package) == []


def test_tracing_loads_the_sdk_when_a_tracer_is_built() -> None:
    code = (
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "from services.proxy.telemetry.tracing import Tracing\n"
        "Tracing('app', 'ns', 'proxy-1', InMemorySpanExporter()).shutdown()"
    )
    assert under(loaded_after(code), "opentelemetry.sdk.trace")


SIDECAR_WITHOUT_REQUEST_AUTHENTICATION = """
import argparse, asyncio, random, tempfile
from pathlib import Path
from services.proxy.main import _build
from services.proxy.sidecar import SidecarSettings
from services.proxy.snapshot import ConfigSnapshot
from shared.model.proxy_config import ProxyConfig

async def build() -> None:
    settings = SidecarSettings(service="a", app_port=1, state_dir=Path(tempfile.mkdtemp()))
    args = argparse.Namespace(citadel_addr="127.0.0.1:1", consul_addr=None)
    sidecar = _build(settings, args, "token", None)
    config = ProxyConfig(proxy_id=sidecar.proxy_id, service="a", namespace="default").versioned()
    sidecar.state.swap(ConfigSnapshot.build(config, random.Random(1)))
    sidecar._inbound.mtls_mode()

asyncio.run(build())
"""
"""Builds the sidecar `isthmus proxy run` builds and applies a config, as far as that goes without sockets."""


def test_a_sidecar_loads_neither_cryptography_nor_pyjwt_nor_grpc() -> None:
    """X.509 and citadel's call run in the enrollment child (csr_child.py); PyJWT only with RequestAuthentication."""
    modules = loaded_after(SIDECAR_WITHOUT_REQUEST_AUTHENTICATION)
    assert "services.proxy.sidecar" in modules and "services.proxy.jwt_authn" in modules
    for package in ("cryptography", "jwt", "grpc", "shared.identity.svid", "services.proxy.enroll_in_process"):
        assert under(modules, package) == []


def test_request_authentication_loads_pyjwt_when_its_rules_are_compiled() -> None:
    code = (
        "from services.proxy.jwt_authn import JwksCache, JwtAuthenticator\n"
        "from shared.model.proxy_config import NamedJwtRule\n"
        "from shared.model.request_authentication import JWTRule\n"
        "JwtAuthenticator([], JwksCache())\n"
        "import sys; assert 'jwt' not in sys.modules\n"
        "rule = NamedJwtRule(name='default/jwt', rule=JWTRule(issuer='https://issuer', jwks_uri='http://jwks'))\n"
        "JwtAuthenticator([rule], JwksCache())"
    )
    assert under(loaded_after(code), "jwt")


def test_tracing_over_otlp_http_loads_no_grpc() -> None:
    code = (
        "import services.proxy.main\n"
        "from services.proxy.telemetry.tracing import otlp_exporter\n"
        "otlp_exporter('http://127.0.0.1:4318/v1/traces').shutdown()"
    )
    modules = loaded_after(code)
    assert under(modules, "opentelemetry.exporter.otlp.proto.http")
    assert under(modules, "grpc") == []
