"""A proxy config's version: the hash of its content, stamped into the same serialization that is published."""

from __future__ import annotations

import hashlib
import json

from shared.model.proxy_config import ProxyConfig


def _config(**changes: object) -> ProxyConfig:
    endpoint = {"address": "10.0.0.1", "port": 15006, "labels": {"version": "", "app": "reviews"}}
    body: dict[str, object] = {
        "proxyId": "p-1",
        "service": "frontend",
        "namespace": "default",
        "clusters": [{"name": "outbound|80||reviews", "host": "reviews", "port": 80, "endpoints": [endpoint]}],
    }
    body.update(changes)
    return ProxyConfig.model_validate(body)


def test_the_stamped_version_is_the_top_level_one_and_hashes_the_unversioned_form() -> None:
    version, payload = _config().stamped()
    published = json.loads(payload)
    assert published["version"] == version
    assert published["clusters"][0]["endpoints"][0]["labels"]["version"] == ""  # a label of that name is left alone
    unversioned = payload.replace(f'"version":"{version}"'.encode(), b'"version":""', 1)
    assert hashlib.sha256(unversioned).hexdigest()[:16] == version
    assert ProxyConfig.from_json(payload).stamped() == (version, payload)


def test_content_decides_the_version() -> None:
    assert _config().content_hash() == _config().content_hash()
    assert _config().content_hash() != _config(service="other").content_hash()
    assert _config().versioned().content_hash() == _config().content_hash()  # an old version is not hashed
