"""A whole mesh on one machine: control-plane processes (citadel, galley, pilot) and workloads, each a demo
app plus its sidecar; used by `isthmus up`, `isthmus demo` and the integration tests."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.local.processes import Child, Supervisor, free_port, port_open, require_free, wait_until
from shared.consul import PROTOCOL_GRPC, proxy_id_for


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return bool(200 <= reply.status < 300)
    except (OSError, urllib.error.HTTPError):
        return False


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@dataclass(frozen=True)
class ControlPlane:
    nats_url: str
    consul_addr: str
    citadel_addr: str
    galley_url: str
    pilot_url: str
    citadel_state: Path
    trust_domain: str


@dataclass
class Workload:
    service: str
    version: str
    namespace: str
    service_account: str
    app_port: int
    inbound_port: int
    outbound_port: int
    admin_port: int
    health_port: int
    app: Child
    sidecar: Child

    @property
    def proxy_id(self) -> str:
        return proxy_id_for(self.service, self.namespace, self.inbound_port)

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"

    @property
    def outbound_url(self) -> str:
        return f"http://127.0.0.1:{self.outbound_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


@dataclass
class LocalMesh:
    """Starts components as child processes of `supervisor`, with state under `state_dir`."""

    supervisor: Supervisor
    state_dir: Path
    nats_url: str
    consul_addr: str
    trust_domain: str = "cluster.local"
    control_plane: ControlPlane | None = None
    workloads: list[Workload] = field(default_factory=list)
    children: dict[str, Child] = field(default_factory=dict)

    def start_control_plane(
        self,
        citadel_port: int | None = None,
        galley_port: int | None = None,
        pilot_port: int | None = None,
        timeout: float = 30,
    ) -> ControlPlane:
        for port, what, flag in (
            (citadel_port, "citadel", "--citadel-port"),
            (galley_port, "galley", "--galley-port"),
            (pilot_port, "pilot", "--pilot-port"),
        ):
            if port:
                require_free(port, what, flag)
        citadel_port = citadel_port or free_port()
        galley_port = galley_port or free_port()
        pilot_port = pilot_port or free_port()
        citadel_state = self.state_dir / "citadel"
        common = ["--nats-url", self.nats_url]
        self.children["citadel"] = self.supervisor.start(
            "citadel",
            python_module(
                "services.citadel", "--state-dir", str(citadel_state), "--listen", f"127.0.0.1:{citadel_port}",
                "--trust-domain", self.trust_domain, *common,
            ),
        )  # fmt: skip
        self.children["galley"] = self.supervisor.start(
            "galley", python_module("services.galley", "--listen", f"127.0.0.1:{galley_port}", *common)
        )
        self.start_pilot(pilot_port)
        galley_url = f"http://127.0.0.1:{galley_port}"
        pilot_url = f"http://127.0.0.1:{pilot_port}"
        self._wait("citadel", lambda: port_open("127.0.0.1", citadel_port), timeout)
        self._wait("galley", lambda: http_ok(f"{galley_url}/healthz"), timeout)
        self._wait("pilot", lambda: http_ok(f"{pilot_url}/healthz"), timeout)
        self.control_plane = ControlPlane(
            nats_url=self.nats_url,
            consul_addr=self.consul_addr,
            citadel_addr=f"127.0.0.1:{citadel_port}",
            galley_url=galley_url,
            pilot_url=pilot_url,
            citadel_state=citadel_state,
            trust_domain=self.trust_domain,
        )
        return self.control_plane

    def start_pilot(self, port: int, name: str = "pilot") -> Child:
        child = self.supervisor.start(
            name,
            python_module(
                "services.pilot", "--listen", f"127.0.0.1:{port}", "--nats-url", self.nats_url,
                "--consul-addr", self.consul_addr, "--trust-domain", self.trust_domain,
            ),
        )  # fmt: skip
        self.children[name] = child
        return child

    def _wait(self, name: str, check: Callable[[], bool], timeout: float) -> None:
        child = self.children[name]
        try:
            wait_until(lambda: bool(check()) or not child.alive, timeout, name)
        except TimeoutError as err:
            raise RuntimeError(f"{name} did not become ready:\n{child.log_tail()}") from err
        if not child.alive:
            raise RuntimeError(f"{name} exited:\n{child.log_tail()}")

    def start_dashboard(self, port: int | None = None, timeout: float = 30) -> str:
        """Starts the dashboard process; returns its URL."""
        if port:
            require_free(port, "the dashboard", "--dashboard-port")
        port = port or free_port()
        self.children["dashboard"] = self.supervisor.start(
            "dashboard",
            python_module(
                "services.dashboard", "--listen", f"127.0.0.1:{port}", "--consul-addr", self.consul_addr,
                "--nats-url", self.nats_url,
            ),
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        self._wait("dashboard", lambda: http_ok(f"{url}/"), timeout)
        return url

    def bootstrap_token(self, namespace: str, service_account: str, ttl_seconds: int = 86400) -> str:
        from services.citadel.ca import CertificateAuthority
        from services.citadel.tokens import create_token
        from shared.clock import SYSTEM_CLOCK

        assert self.control_plane is not None, "start_control_plane() first"
        ca = CertificateAuthority.load_or_create(self.control_plane.citadel_state, self.trust_domain)
        return create_token(ca, namespace, service_account, ttl_seconds, SYSTEM_CLOCK)

    def add_workload(
        self,
        service: str,
        version: str = "v1",
        namespace: str = "default",
        service_account: str | None = None,
        timeout: float = 30,
        grpc: bool = False,
    ) -> Workload:
        """Starts the demo app for `service` (the gRPC one with `grpc`, its sidecar then `--protocol grpc`) and
        its sidecar; returns once the sidecar reports ready."""
        cp = self.control_plane
        assert cp is not None, "start_control_plane() first"
        account = service_account or service
        ports = {name: free_port() for name in ("app", "inbound", "outbound", "admin", "health")}
        name = f"{service}-{version}-{ports['inbound']}"
        state = self.state_dir / "proxies" / name
        state.mkdir(parents=True, exist_ok=True)
        token_file = state / "token"
        token_file.write_text(self.bootstrap_token(namespace, account))
        token_file.chmod(0o600)
        app_command = (
            python_module(
                "services.demoapp.ratings", "--service", service, "--version", version, "--port", str(ports["app"]),
            )
            if grpc
            else python_module(
                "services.demoapp", "--service", service, "--version", version, "--port", str(ports["app"]),
                "--sidecar", f"http://127.0.0.1:{ports['outbound']}",
            )
        )  # fmt: skip
        app = self.supervisor.start(f"{name}-app", app_command)
        sidecar = self.supervisor.start(
            f"{name}-sidecar",
            python_module(
                "services.proxy", "--service", service, "--version", version, "--namespace", namespace,
                "--service-account", account, "--app-port", str(ports["app"]),
                "--inbound-port", str(ports["inbound"]), "--outbound-port", str(ports["outbound"]),
                "--admin-port", str(ports["admin"]), "--health-port", str(ports["health"]),
                "--nats-url", cp.nats_url, "--consul-addr", cp.consul_addr, "--citadel-addr", cp.citadel_addr,
                "--trust-domain", cp.trust_domain, "--token-file", str(token_file), "--state-dir", str(state),
                "--prometheus-port", "0",  # any free port, published in Consul Meta for Prometheus and the dashboard
                *(("--protocol", PROTOCOL_GRPC) if grpc else ()),
            ),
        )  # fmt: skip
        workload = Workload(
            service=service,
            version=version,
            namespace=namespace,
            service_account=account,
            app_port=ports["app"],
            inbound_port=ports["inbound"],
            outbound_port=ports["outbound"],
            admin_port=ports["admin"],
            health_port=ports["health"],
            app=app,
            sidecar=sidecar,
        )
        self.children[f"{name}-app"] = app
        self.children[f"{name}-sidecar"] = sidecar
        self._wait(f"{name}-app", lambda: port_open("127.0.0.1", ports["app"]), timeout)
        self._wait(f"{name}-sidecar", lambda: http_ok(f"http://127.0.0.1:{ports['health']}/healthz/ready"), timeout)
        # Callers route only to instances whose Consul checks pass: wait for that, so a started workload is usable.
        health = f"http://{cp.consul_addr}/v1/agent/health/service/id/{workload.proxy_id}"
        self._wait(f"{name}-sidecar", lambda: http_ok(health), timeout)
        self.workloads.append(workload)
        return workload

    def apply_text(self, name: str, content: str, dry_run: bool = False) -> dict[str, Any]:
        """POSTs YAML to galley's apply API; returns its JSON answer (raises HTTPError with the errors on 400)."""
        cp = self.control_plane
        assert cp is not None, "start_control_plane() first"
        body = json.dumps({"sources": [{"name": name, "content": content}], "dryRun": dry_run}).encode()
        request = urllib.request.Request(
            f"{cp.galley_url}/v1/apply", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            answer: dict[str, Any] = json.loads(reply.read())
            return answer

    def stop(self) -> None:
        self.supervisor.stop_all()
