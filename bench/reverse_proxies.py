"""Data-plane benchmark baselines: nginx and haproxy as keep-alive reverse proxies in front of the same upstream.

Each runs from a config generated into the run's temp dir, in the foreground, on a loopback port, with one
worker process (nginx) or one thread (haproxy), like the single-threaded sidecar; the system services are
never touched. Missing binaries are installed from the Debian packages when running as root, otherwise that
baseline is skipped with a message saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"
PACKAGES = {"nginx": "nginx", "haproxy": "haproxy", "valgrind": "valgrind"}


@dataclass(frozen=True)
class Baseline:
    name: str
    argv: list[str]
    port: int


def find_binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=SBIN_PATH)


def ensure_installed(names: list[str]) -> dict[str, str]:
    """Binary path per name; installs missing ones with apt-get when root. Names that stay missing are left out."""
    found = {name: path for name in names if (path := find_binary(name)) is not None}
    missing = [name for name in names if name not in found]
    if not missing:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        why = "not running as root" if os.geteuid() != 0 else "no apt-get"
        print(f"skipping {', '.join(missing)}: not installed and {why} (apt-get install {' '.join(missing)})")
        return found
    packages = [PACKAGES[name] for name in missing]
    print(f"installing {', '.join(packages)} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"apt-get install failed, skipping {', '.join(missing)}: {done.stderr.strip()[-300:]}")
    for name in missing:
        path = find_binary(name)
        if path is None:
            print(f"skipping {name}: still not installed")
        else:
            found[name] = path
    return found


def nginx(binary: str, workdir: Path, port: int, upstream_port: int) -> Baseline:
    workdir.mkdir(parents=True, exist_ok=True)
    temp_paths = "\n".join(
        f"    {kind}_temp_path {workdir}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = f"""
worker_processes 1;
daemon off;
master_process on;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp_paths}
    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
    }}
}}
"""
    path = workdir / "nginx.conf"
    path.write_text(config)
    return Baseline("nginx", [binary, "-p", str(workdir), "-c", str(path), "-e", str(workdir / "error.log")], port)


def haproxy(binary: str, workdir: Path, port: int, upstream_port: int) -> Baseline:
    workdir.mkdir(parents=True, exist_ok=True)
    config = f"""
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive

frontend bench
    bind 127.0.0.1:{port}
    default_backend bench_upstream

backend bench_upstream
    http-reuse always
    server upstream 127.0.0.1:{upstream_port}
"""
    path = workdir / "haproxy.cfg"
    path.write_text(config)
    return Baseline("haproxy", [binary, "-db", "-f", str(path)], port)


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (nginx's workers), from /proc/<pid>/task/*/children."""
    tree = [pid]
    index = 0
    while index < len(tree):
        current = tree[index]
        index += 1
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            tree.extend(int(child) for child in children if int(child) not in tree)
    return tree
