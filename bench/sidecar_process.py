"""Data-plane benchmark launcher: one real Sidecar in its own process, certified by a citadel CA kept on disk.

`python -m bench.sidecar_process --ca-dir D --service S --app-port P --config F` gets its certificate from the
CA that `bench.dataplane` created (services/citadel/ca.py) through a child process (bench/enroll_child.py: as
in production, the sidecar never loads `cryptography`), builds a Sidecar as `isthmus proxy run` does (uvloop,
metrics on, access log and tracing off, logging at INFO: the defaults), applies the ProxyConfig JSON in F
without NATS, prints one JSON line with its ports and identity, and serves until SIGTERM. No NATS, no
Consul: only the data path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import signal
import sys
from pathlib import Path

import uvloop

from services.proxy.csr_child import run_enrollment_child
from services.proxy.sidecar import Sidecar, SidecarSettings
from services.proxy.snapshot import ConfigSnapshot
from services.proxy.telemetry.setup import TelemetrySettings
from services.proxy.tls import WorkloadIdentity
from shared.consul import PROTOCOL_HTTP
from shared.identity.enrollment import Enrollment
from shared.model.proxy_config import ProxyConfig

NAMESPACE = "bench"
TRUST_DOMAIN = "cluster.local"


def settings_for(service: str, app_port: int, state_dir: Path, protocol: str = PROTOCOL_HTTP) -> SidecarSettings:
    return SidecarSettings(
        protocol=protocol,
        service=service,
        namespace=NAMESPACE,
        app_port=app_port,
        inbound_port=0,
        outbound_port=0,
        admin_port=0,
        health_port=0,
        trust_domain=TRUST_DOMAIN,
        state_dir=state_dir,
        host="bench",
        telemetry=TelemetrySettings(prometheus_port=0),
    )


class CaDirEnroller:
    """Enrolls through `python -m bench.enroll_child`, which signs with the CA in `ca_dir`."""

    def __init__(self, ca_dir: Path) -> None:
        self.ca_dir = ca_dir

    async def enroll(self, spiffe_id: str, current: WorkloadIdentity | None) -> Enrollment:
        command = (sys.executable, "-m", "bench.enroll_child", "--ca-dir", str(self.ca_dir))
        return await run_enrollment_child(command, json.dumps({"spiffe_id": spiffe_id}).encode())


async def serve(args: argparse.Namespace) -> None:
    settings = settings_for(args.service, args.app_port, args.state_dir, args.protocol)
    sidecar = Sidecar(settings, CaDirEnroller(args.ca_dir), bus_trust_bundle=False)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await sidecar.start()
    try:
        config = ProxyConfig.from_json(args.config.read_bytes())
        config = config.model_copy(update={"proxy_id": sidecar.proxy_id})
        sidecar.state.swap(ConfigSnapshot.build(config.versioned(), random.Random(1)))
        ports = {name: listener.port for name, listener in sidecar.listeners.items()}
        print(json.dumps({"ports": ports, "spiffe_id": settings.spiffe_id}), flush=True)
        await stop.wait()
    finally:
        await sidecar.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="one sidecar for the data-plane benchmark")
    parser.add_argument("--ca-dir", type=Path, required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--app-port", type=int, required=True)
    parser.add_argument("--config", type=Path, required=True, help="ProxyConfig JSON")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--protocol", default=PROTOCOL_HTTP, help="what the app's port speaks (default http)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
