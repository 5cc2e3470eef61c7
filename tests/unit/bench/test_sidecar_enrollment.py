"""The benchmark's sidecars enroll through a child that signs with the CA on disk, and load no `cryptography`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cryptography import x509

from bench.sidecar_process import CaDirEnroller
from services.citadel.ca import CertificateAuthority
from services.proxy.tls import WorkloadIdentity, server_context
from shared.identity.enrollment import first_certificate_der
from shared.identity.svid import spiffe_id_of_cert

SPIFFE = "spiffe://cluster.local/ns/bench/sa/server"
ROOT = Path(__file__).resolve().parents[3]


async def test_the_child_signs_with_the_ca_on_disk(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", "cluster.local")
    enrolled = await CaDirEnroller(tmp_path / "ca").enroll(SPIFFE, None)
    assert spiffe_id_of_cert(x509.load_pem_x509_certificate(enrolled.chain_pem[0])) == SPIFFE
    assert enrolled.issuer_root_der == first_certificate_der(ca.trust_bundle_pem())
    server_context(WorkloadIdentity(SPIFFE, enrolled.key_pem, enrolled.chain_pem, enrolled.trust_bundle_pem, 0.0))


def test_the_benchmark_sidecar_loads_no_cryptography() -> None:
    script = "import bench.sidecar_process, json, sys; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60, cwd=ROOT
    )
    modules = json.loads(result.stdout.splitlines()[-1])
    assert not [name for name in modules if name == "cryptography" or name.startswith("cryptography.")]
