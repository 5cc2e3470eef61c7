#!/usr/bin/env python3
"""`isthmus-vm`: a demo "VM" in one container: the workload's app, its Isthmus sidecar and, as on a real
VM, a local Consul client agent that the sidecar registers the workload with.

Runs as PID 1. Waits for the bootstrap token, starts the Consul agent (when ISTHMUS_CONSUL_JOIN is set)
and waits until it knows a leader, starts the app, then `isthmus proxy run` in front of it. Forwards
SIGTERM/SIGINT/SIGHUP in order: the sidecar first (it deregisters from the agent and drains), then the
app and the agent. Reaps every child, and exits as soon as any of them exits, stopping the others.

Configuration is by environment (compose sets it); every value has the default shown:
  ISTHMUS_SERVICE (required)       ISTHMUS_VERSION=v1            ISTHMUS_NAMESPACE=default
  ISTHMUS_SERVICE_ACCOUNT=<service>                              ISTHMUS_APP_PORT=8080
  ISTHMUS_ADDRESS=<this container's IP, from its route to citadel>
  ISTHMUS_NATS_URL=nats://nats:4222  ISTHMUS_CONSUL_ADDR=127.0.0.1:8500 (the VM's own agent)
  ISTHMUS_CITADEL_ADDR=citadel:15012 ISTHMUS_TRUST_DOMAIN=cluster.local
  ISTHMUS_TOKEN_FILE=/var/lib/isthmus/token/token              ISTHMUS_STATE_DIR=/var/lib/isthmus/proxy
  ISTHMUS_CONSUL_JOIN=<unset: no local agent; else the Consul server(s) to join, space-separated>
  ISTHMUS_CONSUL_BIN=<consul on PATH, else /opt/consul/bin/consul>
  ISTHMUS_APP_COMMAND=python3 -m services.demoapp --service S --version V --port P --sidecar http://127.0.0.1:15001
  ISTHMUS_WAIT_SECONDS=120 (how long to wait for the token and the Consul agent)
  ISTHMUS_TRACE_ENDPOINT=<unset: no tracing; else the sidecar's --trace-endpoint, e.g. http://jaeger:4318/v1/traces>
  ISTHMUS_LOCALITY=<unset; else the sidecar's --locality, e.g. eu-west/zone-a>
  ISTHMUS_WEIGHT=<unset; else the sidecar's --weight, e.g. 2>
  ISTHMUS_GATEWAY=<unset; "true": an ingress gateway: no app, the proxy runs with --gateway>
Arguments, if any, are extra flags for `isthmus proxy run`.

`isthmus-vm health` is the container's health check: the Consul agent knows a leader, the app's port is
open, and the sidecar answers ready on its health port at the address it registered (not on loopback).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import sys
import time
import urllib.request
from types import FrameType

INBOUND_PORT = 15006
OUTBOUND_PORT = 15001
ADMIN_PORT = 15000
HEALTH_PORT = 15021
STOP_GRACE_SECONDS = 10
ADDRESS_FILE = "/tmp/isthmus-vm.address"


def log(message: str) -> None:
    print(f"isthmus-vm: {message}", file=sys.stderr, flush=True)


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if default is None:
        log(f"{name} must be set")
        sys.exit(2)
    return default


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def own_address(towards: str) -> str:
    """The local IP this container uses to reach `towards` (host:port); a UDP connect sends nothing."""
    host, port = split_host_port(towards)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(sockaddr)
        return str(probe.getsockname()[0])


def wait_for(what: str, check: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    announced = False
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            log(f"gave up waiting for {what} after {seconds:.0f}s")
            sys.exit(1)
        if not announced:
            log(f"waiting for {what}")
            announced = True
        time.sleep(0.5)


def consul_has_leader(consul_addr: str) -> bool:
    with urllib.request.urlopen(f"http://{consul_addr}/v1/status/leader", timeout=2) as reply:
        return bool(json.loads(reply.read()))


class Children:
    """The VM's processes; reaps all children (PID 1 inherits orphans) and stops them together, in order."""

    STOP_ORDER = ("sidecar", "app", "agent")

    def __init__(self) -> None:
        self.pids: dict[int, str] = {}
        self.stopping = False

    def spawn(self, name: str, argv: list[str]) -> None:
        log(f"starting {name}: {shlex.join(argv)}")
        pid = os.fork()
        if pid == 0:  # child
            try:
                for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
                    signal.signal(number, signal.SIG_DFL)
                os.execvp(argv[0], argv)
            except OSError as error:
                print(f"isthmus-vm: cannot start {name}: {error}", file=sys.stderr, flush=True)
            os._exit(127)
        self.pids[pid] = name

    def alive(self, name: str) -> bool:
        return name in self.pids.values()

    def _send(self, number: int, names: tuple[str, ...]) -> None:
        for pid, name in list(self.pids.items()):
            if name in names:
                try:
                    os.kill(pid, number)
                except ProcessLookupError:
                    pass

    def stop(self) -> None:
        """SIGTERM to the sidecar first; the app and the agent get theirs once it is gone (see reaped)."""
        if not self.stopping:
            self.stopping = True
            signal.alarm(STOP_GRACE_SECONDS)
        if self.alive("sidecar"):
            self._send(signal.SIGTERM, ("sidecar",))
        else:
            self._send(signal.SIGTERM, self.STOP_ORDER)

    def kill_all(self) -> None:
        self._send(signal.SIGKILL, self.STOP_ORDER)

    def wait(self) -> int:
        """Reaps until all of ours are gone; the first to exit on its own sets the container's exit code."""
        code: int | None = None
        while self.pids:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            name = self.pids.pop(pid, None)
            if name is None:
                continue  # an orphan re-parented to PID 1
            exit_code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                log(f"{name} stopped ({exit_code})")
                if code is None:
                    code = 0
                if name == "sidecar":
                    self._send(signal.SIGTERM, self.STOP_ORDER)
                continue
            log(f"{name} exited ({exit_code}); stopping the rest")
            code = exit_code if exit_code > 0 else 1
            self.stop()
        return code or 0


def consul_binary() -> str:
    explicit = os.environ.get("ISTHMUS_CONSUL_BIN", "").strip()
    if explicit:
        return explicit
    return shutil.which("consul") or "/opt/consul/bin/consul"


def gateway() -> bool:
    return env("ISTHMUS_GATEWAY", "").lower() == "true"


def health() -> int:
    """0 when the agent knows a leader, the app listens and the sidecar is ready; prints why not otherwise."""
    consul_addr = env("ISTHMUS_CONSUL_ADDR", "127.0.0.1:8500")
    try:
        if not consul_has_leader(consul_addr):
            print(f"consul agent {consul_addr}: no leader")
            return 1
    except OSError as error:
        print(f"consul agent {consul_addr}: {error}")
        return 1
    try:
        with open(ADDRESS_FILE) as handle:
            address = handle.read().strip()
    except OSError:
        print("not started yet (no sidecar address)")
        return 1
    app_port = int(env("ISTHMUS_APP_PORT", "8080"))
    try:
        if not gateway():
            socket.create_connection(("127.0.0.1", app_port), timeout=2).close()
    except OSError as error:
        print(f"app port {app_port}: {error}")
        return 1
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:{HEALTH_PORT}/healthz/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            print(f"{url}: {reply.status}")
            return 0 if reply.status == 200 else 1
    except OSError as error:
        print(f"{url}: {error}")
        return 1


def main() -> int:
    if sys.argv[1:2] == ["health"]:
        return health()
    service = env("ISTHMUS_SERVICE")
    version = env("ISTHMUS_VERSION", "v1")
    namespace = env("ISTHMUS_NAMESPACE", "default")
    account = env("ISTHMUS_SERVICE_ACCOUNT", service)
    app_port = env("ISTHMUS_APP_PORT", "8080")
    nats_url = env("ISTHMUS_NATS_URL", "nats://nats:4222")
    consul_addr = env("ISTHMUS_CONSUL_ADDR", "127.0.0.1:8500")
    citadel_addr = env("ISTHMUS_CITADEL_ADDR", "citadel:15012")
    trust_domain = env("ISTHMUS_TRUST_DOMAIN", "cluster.local")
    token_file = env("ISTHMUS_TOKEN_FILE", "/var/lib/isthmus/token/token")
    state_dir = env("ISTHMUS_STATE_DIR", "/var/lib/isthmus/proxy")
    wait_seconds = float(env("ISTHMUS_WAIT_SECONDS", "120"))
    optional = [
        arg
        for flag, name in (
            ("--trace-endpoint", "ISTHMUS_TRACE_ENDPOINT"),
            ("--locality", "ISTHMUS_LOCALITY"),
            ("--weight", "ISTHMUS_WEIGHT"),
        )
        if (value := env(name, ""))
        for arg in (flag, value)
    ]
    app_command = shlex.split(
        env(
            "ISTHMUS_APP_COMMAND",
            f"python3 -m services.demoapp --service {shlex.quote(service)} --version {shlex.quote(version)} "
            f"--port {app_port} --sidecar http://127.0.0.1:{OUTBOUND_PORT}",
        )
    )

    children = Children()

    def on_signal(number: int, frame: FrameType | None) -> None:
        log(f"got signal {signal.Signals(number).name}; stopping sidecar and app")
        if not children.pids:
            sys.exit(0)
        children.stop()

    def on_alarm(number: int, frame: FrameType | None) -> None:
        log(f"still running {STOP_GRACE_SECONDS}s after SIGTERM; killing")
        children.kill_all()

    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)

    wait_for(f"the bootstrap token at {token_file}", lambda: os.path.getsize(token_file) > 0, wait_seconds)
    # The address other sidecars dial: this container's IP on the network it shares with them.
    towards = citadel_addr if consul_addr.startswith(("127.", "localhost")) else consul_addr
    address = env("ISTHMUS_ADDRESS", "") or own_address(towards)
    join = env("ISTHMUS_CONSUL_JOIN", "").split()
    if join:
        children.spawn(
            "agent",
            [
                consul_binary(), "agent", "-data-dir", "/tmp/consul-agent", "-client", "127.0.0.1",
                "-http-port", str(split_host_port(consul_addr)[1]), "-bind", address,
                "-node", socket.gethostname(), "-log-level", "warn",
                *[arg for server in join for arg in ("-retry-join", server)],
            ],
        )  # fmt: skip
    wait_for(f"the Consul agent at {consul_addr}", lambda: consul_has_leader(consul_addr), wait_seconds)
    os.makedirs(state_dir, exist_ok=True)
    with open(ADDRESS_FILE, "w") as handle:
        handle.write(address)

    if gateway():
        workload = ["--gateway"]
    else:
        children.spawn("app", app_command)
        workload = ["--app-port", app_port]
    children.spawn(
        "sidecar",
        [
            "isthmus", "proxy", "run",
            "--service", service, "--namespace", namespace, "--service-account", account, "--version", version,
            *workload, "--address", address,
            "--inbound-port", str(INBOUND_PORT), "--outbound-port", str(OUTBOUND_PORT),
            "--admin-port", str(ADMIN_PORT), "--health-port", str(HEALTH_PORT),
            "--nats-url", nats_url, "--consul-addr", consul_addr, "--citadel-addr", citadel_addr,
            "--token-file", token_file, "--trust-domain", trust_domain, "--state-dir", state_dir,
            *optional, *sys.argv[1:],
        ],
    )  # fmt: skip
    return children.wait()


if __name__ == "__main__":
    sys.exit(main())
