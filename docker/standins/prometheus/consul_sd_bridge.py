#!/usr/bin/env python3
"""Entrypoint of the stand-in prometheus image. Debian's prometheus build has no Consul service
discovery (`consul_sd_configs` is refused), so this keeps the public image's config working: it rewrites
each `consul_sd_configs` entry into a `file_sd_configs` file, keeps those files current from the Consul
catalog (the same `__meta_consul_*` labels Prometheus' own Consul discovery sets, so relabel rules work
unchanged), and then runs prometheus with the rewritten config. Configs without Consul discovery pass
through untouched."""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

import yaml

PROMETHEUS = "/bin/prometheus"
SD_DIR = "/tmp/consul-sd"
REWRITTEN = "/tmp/prometheus-standin.yml"
REFRESH_SECONDS = 5.0


def label_name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def consul_targets(sd: dict[str, Any]) -> list[dict[str, Any]]:
    server = sd.get("server", "localhost:8500")
    scheme = sd.get("scheme", "http")
    tags = set(sd.get("tags") or [])
    wanted = set(sd.get("services") or [])
    base = f"{scheme}://{server}/v1/catalog"
    with urllib.request.urlopen(f"{base}/services", timeout=5) as reply:
        services: dict[str, list[str]] = json.loads(reply.read())
    groups = []
    for name, service_tags in sorted(services.items()):
        if (wanted and name not in wanted) or not tags.issubset(service_tags or []):
            continue
        with urllib.request.urlopen(f"{base}/service/{urllib.parse.quote(name, safe='')}", timeout=5) as reply:
            nodes = json.loads(reply.read())
        for node in nodes:
            if not tags.issubset(node.get("ServiceTags") or []):
                continue
            address = node.get("ServiceAddress") or node.get("Address")
            port = node.get("ServicePort")
            labels = {
                "__meta_consul_address": node.get("Address", ""),
                "__meta_consul_dc": node.get("Datacenter", ""),
                "__meta_consul_node": node.get("Node", ""),
                "__meta_consul_service": name,
                "__meta_consul_service_address": address,
                "__meta_consul_service_id": node.get("ServiceID", ""),
                "__meta_consul_service_port": str(port),
                "__meta_consul_tags": "," + ",".join(node.get("ServiceTags") or []) + ",",
            }
            for key, value in (node.get("ServiceMeta") or {}).items():
                labels[f"__meta_consul_service_metadata_{label_name(key)}"] = value
            for key, value in (node.get("NodeMeta") or {}).items():
                labels[f"__meta_consul_metadata_{label_name(key)}"] = value
            groups.append({"targets": [f"{address}:{port}"], "labels": labels})
    return groups


def rewrite(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Replaces consul_sd_configs in place; returns (file, consul sd config) pairs to keep current."""
    bridged = []
    for job in config.get("scrape_configs") or []:
        consul = job.pop("consul_sd_configs", None)
        if not consul:
            continue
        files = job.setdefault("file_sd_configs", [])
        for index, sd in enumerate(consul):
            path = f"{SD_DIR}/{label_name(job['job_name'])}-{index}.json"
            files.append({"files": [path], "refresh_interval": f"{int(REFRESH_SECONDS)}s"})
            bridged.append((path, sd))
    return bridged


def write_atomic(path: str, groups: list[dict[str, Any]]) -> None:
    temp = f"{path}.tmp"
    with open(temp, "w") as handle:
        json.dump(groups, handle)
    os.replace(temp, path)


def poll(bridged: list[tuple[str, dict[str, Any]]]) -> None:
    while True:
        for path, sd in bridged:
            try:
                write_atomic(path, consul_targets(sd))
            except (OSError, ValueError) as error:
                print(f"consul-sd bridge: {sd.get('server')}: {error}", file=sys.stderr, flush=True)
        time.sleep(REFRESH_SECONDS)


def main(argv: list[str]) -> None:
    if argv and not argv[0].startswith("-"):
        os.execvp(argv[0], argv)  # a command, not prometheus flags
    config_file = "/etc/prometheus/prometheus.yml"
    for index, arg in enumerate(argv):
        if arg.startswith("--config.file="):
            config_file = arg.split("=", 1)[1]
        elif arg == "--config.file" and index + 1 < len(argv):
            config_file = argv[index + 1]
    with open(config_file) as handle:
        config = yaml.safe_load(handle) or {}
    bridged = rewrite(config)
    if bridged:
        os.makedirs(SD_DIR, exist_ok=True)
        for path, _ in bridged:
            write_atomic(path, [])
        with open(REWRITTEN, "w") as handle:
            yaml.safe_dump(config, handle)
        kept = [a for i, a in enumerate(argv) if not (i > 0 and argv[i - 1] == "--config.file")]
        argv = [a for a in kept if not a.startswith("--config.file")] + [f"--config.file={REWRITTEN}"]
        print(f"consul-sd bridge: {len(bridged)} consul_sd_configs served as file_sd from {SD_DIR}", flush=True)
        if os.fork() == 0:
            poll(bridged)
            os._exit(0)
    os.execv(PROMETHEUS, [PROMETHEUS, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
