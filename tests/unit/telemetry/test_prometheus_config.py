"""deploy/prometheus/prometheus.yml finds sidecars the way they register in Consul."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shared.consul import MESH_TAG, META_PROMETHEUS_PORT

CONFIG = Path(__file__).parents[3] / "deploy" / "prometheus" / "prometheus.yml"


def test_sidecars_are_found_by_tag_and_scraped_on_their_registered_port() -> None:
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "isthmus-sidecars")
    assert job["consul_sd_configs"][0]["tags"] == [MESH_TAG]
    assert job["metrics_path"] == "/stats/prometheus"
    meta_label = "__meta_consul_service_metadata_" + META_PROMETHEUS_PORT.replace("-", "_")
    address = next(rule for rule in job["relabel_configs"] if rule.get("target_label") == "__address__")
    assert address["source_labels"] == ["__meta_consul_service_address", meta_label]
    assert any(
        rule.get("action") == "keep" and rule["source_labels"] == [meta_label] for rule in job["relabel_configs"]
    )
