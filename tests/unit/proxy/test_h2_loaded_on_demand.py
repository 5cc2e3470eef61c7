"""A sidecar that never speaks HTTP/2 does not carry the h2 library (its memory counts against every sidecar)."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
import services.proxy.main
import services.proxy.sidecar
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("h2", "hpack", "hyperframe"))
print(",".join(loaded))
"""


def test_the_proxy_starts_without_loading_h2() -> None:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == ""


def test_the_http2_front_brings_h2_in() -> None:
    probe = _PROBE.replace("import services.proxy.sidecar", "import services.proxy.h2server")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert "h2.connection" in result.stdout.split(",")
