"""Enrollment child of the benchmark's sidecars: signs with the CA on disk, so the sidecar maps no `cryptography`.

`python -m bench.enroll_child --ca-dir D` reads `{"spiffe_id": ...}` on stdin, makes a key and a CSR, signs it
with the CA that `bench.dataplane` created, checks the certificate as services/proxy/csr_child.py does and
answers in that module's format. A production sidecar's child asks citadel instead; the sidecar process is the
same either way, so the benchmark's RSS is a production sidecar's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from services.citadel.ca import CertificateAuthority
from services.citadel.testing import DirectCaSource
from services.proxy.csr_child import answer_of
from services.proxy.enroll_in_process import InProcessEnroller


def main() -> int:
    parser = argparse.ArgumentParser(description="sign one benchmark sidecar's certificate")
    parser.add_argument("--ca-dir", type=Path, required=True)
    args = parser.parse_args()
    request = json.loads(sys.stdin.buffer.read())
    enroller = InProcessEnroller(DirectCaSource(CertificateAuthority.load(args.ca_dir)))
    enrolled = asyncio.run(enroller.enroll(str(request["spiffe_id"]), None))
    sys.stdout.write(json.dumps({"enrolled": answer_of(enrolled)}))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
