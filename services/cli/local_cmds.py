"""`isthmus up` (infrastructure + control plane) and `isthmus demo` (that plus the demo app and its canary)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import urllib.error
from pathlib import Path
from types import FrameType
from typing import Any

from services.cli.proxy_status import collect, format_table
from services.local import demo, ingress, legacy, partner, ratings
from services.local.infra import forget_earlier_proxies, start_consul, start_nats
from services.local.mesh import LocalMesh
from services.local.processes import Supervisor

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop_on_sigterm() -> None:
    """Ctrl-C, SIGTERM and SIGHUP stop the mesh; once stopping, further signals are ignored so the stop runs to
    its end (each child gets SIGTERM, then SIGKILL after its grace) and leaves no child behind."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_IGN)
        raise KeyboardInterrupt

    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, raise_interrupt)


def _start(args: argparse.Namespace, supervisor: Supervisor) -> LocalMesh:
    state_dir = Path(args.state_dir).resolve()
    nats_handle = start_nats(supervisor, state_dir, port=args.nats_port)
    forget_earlier_proxies(nats_handle.url)
    consul_handle = start_consul(supervisor, state_dir, http_port=args.consul_port)
    mesh = LocalMesh(supervisor, state_dir, nats_url=nats_handle.url, consul_addr=consul_handle.addr)
    mesh.start_control_plane(citadel_port=args.citadel_port, galley_port=args.galley_port, pilot_port=args.pilot_port)
    return mesh


def _print_endpoints(mesh: LocalMesh, log_dir: Path) -> None:
    cp = mesh.control_plane
    assert cp is not None
    print(
        f"""
Isthmus control plane is up.
  NATS (JetStream)   {cp.nats_url}
  Consul             http://{cp.consul_addr}/ui/
  citadel (gRPC)     {cp.citadel_addr}
  galley API         {cp.galley_url}
  pilot debug        {cp.pilot_url}/debug/proxies   metrics: {cp.pilot_url}/metrics
  logs               {log_dir}

Use it from another shell:
  export ISTHMUS_NATS_URL={cp.nats_url} ISTHMUS_GALLEY_URL={cp.galley_url} \\
         ISTHMUS_CONSUL_ADDR={cp.consul_addr} ISTHMUS_CITADEL_ADDR={cp.citadel_addr}
  isthmus apply -f my-config.yaml
  isthmus get virtualservice -n shop
  isthmus proxy-status
  isthmus token create --state-dir {cp.citadel_state} --namespace NS --service-account SA
""",
        flush=True,
    )


def _wait_forever(supervisor: Supervisor) -> None:
    print("Press Ctrl-C to stop everything.", flush=True)
    reported: set[str] = set()
    while True:
        time.sleep(1)
        for child in supervisor.dead():
            if child.name not in reported:
                reported.add(child.name)
                print(f"warning: {child.name} exited (see {child.log_path})", flush=True)


def _run_up(args: argparse.Namespace) -> int:
    _stop_on_sigterm()
    supervisor = Supervisor(Path(args.state_dir).resolve() / "logs")
    try:
        mesh = _start(args, supervisor)
        _print_endpoints(mesh, supervisor.log_dir)
        if not args.no_wait:
            _wait_forever(supervisor)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as err:
        print(f"isthmus up: {err}", file=sys.stderr)
        return 1
    finally:
        for stop_signal in STOP_SIGNALS:  # an error or --no-wait stops here too: nothing may interrupt the stop
            signal.signal(stop_signal, signal.SIG_IGN)
        print("stopping...", flush=True)
        supervisor.stop_all()
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    _stop_on_sigterm()
    supervisor = Supervisor(Path(args.state_dir).resolve() / "logs")
    try:
        mesh = _start(args, supervisor)
        dashboard_url = mesh.start_dashboard(args.dashboard_port)
        print("starting demo workloads (app + sidecar each)...", flush=True)
        workloads = demo.start_workloads(mesh)
        print("starting the partner API outside the mesh (HTTPS, no sidecar)...", flush=True)
        external = partner.start_partner(mesh)
        print("starting two inventory VMs outside the catalog (no sidecar, not in Consul)...", flush=True)
        vms = legacy.start_legacy(mesh)
        print("starting ratings v1 and v2 (gRPC apps, sidecars with --protocol grpc)...", flush=True)
        ratings.start_ratings(mesh)
        print("starting the ingress gateway (a gateway proxy, no app)...", flush=True)
        gateway = ingress.start_gateway(mesh)
        config = [
            *demo.demo_config(),
            ("partner-api.yaml", partner.partner_config(external.port, external.ca)),
            ("inventory.yaml", legacy.legacy_config(vms)),
            ("ingress.yaml", ingress.gateway_config(gateway, demo.NAMESPACE)),
            ("ratings.yaml", ratings.ratings_config()),
        ]
        for name, content in config:
            try:
                answer = mesh.apply_text(name, content)
            except urllib.error.HTTPError as err:
                print(f"demo config {name} rejected: {err.read().decode()}", flush=True)
                return 1
            for item in answer.get("applied", []):
                print(f"applied {item['kind']} {item['namespace']}/{item['name']} ({item['action']})", flush=True)
        _print_endpoints(mesh, supervisor.log_dir)
        order = workloads["order-service-v1"]
        report = demo.run_traffic(order, args.requests)
        external_call = partner.run_partner_call(order)
        inventory = legacy.run_legacy_calls(order)
        entering = ingress.run_gateway_calls(gateway)
        graded = ratings.run_ratings_calls(order)
        total = sum(report.versions.values())
        print(f"order-service -> product-service, {total} requests: " + json.dumps(dict(report.versions)))
        print("  with header end-user: jason: " + json.dumps(dict(report.jason_versions)))
        print(f"order-service -> payment-service: payment saw caller {report.payment_caller}")
        print(external_call.report_line())
        print(inventory.report_line())
        print(entering.report_line())
        print(graded.report_line())
        print("\nproxy-status:\n" + format_table(asyncio.run(collect(mesh.nats_url))), flush=True)
        print(f"\nDashboard (live service graph, sync state, config changes): {dashboard_url}", flush=True)
        print(
            f"""
Try it yourself:
  curl -s {order.app_url}/call/product-service/          # 90 % v1, 10 % v2
  curl -s -H 'end-user: jason' {order.app_url}/call/product-service/   # always v2
  curl -s {order.app_url}/call/payment-service/pay       # payment sees order's SPIFFE identity
  curl -s {order.app_url}/call/{partner.PARTNER_HOST}/{partner.PARTNER_PATH}  # outside the mesh, TLS by the sidecar
  curl -s {order.app_url}/call/{legacy.LEGACY_HOST}/stock  # VMs as WorkloadEntries: vm-a 3 of 4
  curl -s -H 'Host: {ingress.GATEWAY_HOST}' {gateway.url}/products/  # from outside, through the ingress gateway
  python -m services.demoapp.ratings --call 127.0.0.1:{order.outbound_port} --count 4  # gRPC, 50/50 v1/v2
  curl -s {order.admin_url}/config_dump                  # what order-service's sidecar runs
""",
            flush=True,
        )
        if not args.no_wait:
            _wait_forever(supervisor)
        inventory_ok = set(inventory.versions) <= {"vm-a", "vm-b"}
        calls_ok = report.failures == 0 and external_call.status == 200 and inventory_ok and entering.ok and graded.ok
        return 0 if calls_ok else 1
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as err:
        print(f"isthmus demo: {err}", file=sys.stderr)
        return 1
    finally:
        for stop_signal in STOP_SIGNALS:  # an error or --no-wait stops here too: nothing may interrupt the stop
            signal.signal(stop_signal, signal.SIG_IGN)
        print("stopping...", flush=True)
        supervisor.stop_all()


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", default=".isthmus/local", help="where state and logs go (default .isthmus/local)"
    )
    parser.add_argument("--nats-port", type=int, default=4222, help="NATS client port (default 4222)")
    parser.add_argument("--consul-port", type=int, default=8500, help="Consul HTTP port (default 8500)")
    parser.add_argument("--citadel-port", type=int, default=15012, help="citadel gRPC port (default 15012)")
    parser.add_argument("--galley-port", type=int, default=15017, help="galley API port (default 15017)")
    parser.add_argument("--pilot-port", type=int, default=15014, help="pilot debug/metrics port (default 15014)")
    parser.add_argument("--no-wait", action="store_true", help="stop everything after start-up instead of waiting")


def register(subparsers: Any) -> None:
    up = subparsers.add_parser(
        "up",
        help="run NATS, Consul, citadel, galley and pilot as local processes",
        description="Runs the infrastructure and control plane as local processes until Ctrl-C.",
    )
    _add_common(up)
    up.set_defaults(handler=_run_up)
    demo_parser = subparsers.add_parser(
        "demo",
        help="`up` plus the demo services with sidecars, the canary config and some traffic",
        description="Runs the whole mesh with order-service -> payment-service and product-service v1/v2, "
        "applies a 90/10 canary (end-user: jason always gets v2), drives traffic and reports the split; "
        "it also calls a partner API outside the mesh through a ServiceEntry, with TLS originated by the sidecar, "
        "two inventory VMs outside the catalog as weighted WorkloadEntries, and product-service from outside the "
        "mesh through an ingress gateway (a Gateway and a VirtualService bound to it), and a gRPC service (ratings "
        "v1/v2, split 50/50) over HTTP/2.",
    )
    _add_common(demo_parser)
    demo_parser.add_argument("--requests", type=int, default=200, help="requests to drive (default 200)")
    demo_parser.add_argument("--dashboard-port", type=int, default=15030, help="dashboard port (default 15030)")
    demo_parser.set_defaults(handler=_run_demo)
