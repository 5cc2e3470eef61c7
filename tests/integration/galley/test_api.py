"""Galley's HTTP API over a real loopback socket, backed by the real nats-server."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import nats
import pytest
from aiohttp import web
from nats.aio.client import Client as NatsClient

from services.galley.api import MAX_REQUEST_BYTES, create_app
from services.galley.store import ConfigStore
from shared.bus.names import config_key

pytestmark = pytest.mark.integration

VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: product, namespace: shop}
spec:
  hosts: [product]
  http:
  - route:
    - destination: {host: product, subset: v1}
      weight: WEIGHT
    - destination: {host: product, subset: v2}
      weight: 10
"""
DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: product, namespace: shop}
spec:
  host: product
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def vs(weight: int = 90) -> str:
    return VS.replace("WEIGHT", str(weight))


async def call(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as reply:
        return reply.status, await reply.json(content_type=None)


async def apply(galley_url: str, *sources: tuple[str, str], dry_run: bool = False) -> tuple[int, Any]:
    body = {"sources": [{"name": n, "content": c} for n, c in sources], "dryRun": dry_run}
    return await call("POST", f"{galley_url}/v1/apply", json=body)


async def test_apply_get_list_delete_round_trip(galley_url: str) -> None:
    status, body = await apply(galley_url, ("vs.yaml", vs()), ("dr.yaml", DR))
    assert status == 200, body
    assert [(a["kind"], a["action"]) for a in body["applied"]] == [
        ("VirtualService", "created"),
        ("DestinationRule", "created"),
    ]
    revision = body["applied"][0]["revision"]

    status, resource = await call("GET", f"{galley_url}/v1/resources/vs/shop/product")
    assert status == 200
    meta = resource["metadata"]
    assert (meta["name"], meta["namespace"], meta["resourceVersion"]) == ("product", "shop", str(revision))
    assert resource["spec"]["http"][0]["route"][0]["weight"] == 90

    status, listing = await call("GET", f"{galley_url}/v1/resources", params={"namespace": "shop"})
    assert [item["kind"] for item in listing["items"]] == ["DestinationRule", "VirtualService"]
    status, listing = await call("GET", f"{galley_url}/v1/resources", params={"kind": "dr"})
    assert [item["kind"] for item in listing["items"]] == ["DestinationRule"]

    status, body = await call("DELETE", f"{galley_url}/v1/resources/VirtualService/shop/product")
    assert status == 200
    status, body = await call("DELETE", f"{galley_url}/v1/resources/VirtualService/shop/product")
    assert (status, body) == (404, {"errors": ["VirtualService shop/product not found"]})
    status, body = await call("GET", f"{galley_url}/v1/resources/VirtualService/shop/product")
    assert status == 404


async def test_invalid_batch_stores_nothing_and_previous_version_stays(
    galley_url: str, nc: NatsClient, bucket: str
) -> None:
    status, body = await apply(galley_url, ("vs.yaml", vs(70)))
    assert status == 200
    kv = await nc.jetstream().key_value(bucket)
    before = await kv.get(config_key("VirtualService", "shop", "product"))

    broken_dr = DR.replace("host: product", "host: product\n  trafficPolicy: {loadBalancer: {simple: FASTEST}}")
    status, body = await apply(galley_url, ("vs.yaml", vs(50)), ("dr.yaml", broken_dr))
    assert status == 400
    assert len(body["errors"]) == 1
    assert body["errors"][0].startswith(
        "dr.yaml: document 1 (DestinationRule shop/product): spec.trafficPolicy.loadBalancer.simple:"
    )
    after = await kv.get(config_key("VirtualService", "shop", "product"))
    assert (after.revision, after.value) == (before.revision, before.value)
    assert json.loads(after.value or b"")["spec"]["http"][0]["route"][0]["weight"] == 70
    status, listing = await call("GET", f"{galley_url}/v1/resources", params={"kind": "DestinationRule"})
    assert listing == {"items": []}


async def test_unchanged_reapply_keeps_revision(galley_url: str) -> None:
    _, first = await apply(galley_url, ("vs.yaml", vs()))
    status, again = await apply(galley_url, ("vs.yaml", vs()))
    assert status == 200
    assert again["applied"][0]["action"] == "unchanged"
    assert again["applied"][0]["revision"] == first["applied"][0]["revision"]


async def test_dry_run_and_raw_yaml_body(galley_url: str) -> None:
    status, body = await apply(galley_url, ("vs.yaml", vs()), dry_run=True)
    assert (status, body["applied"][0]["action"], body["dryRun"]) == (200, "created", True)
    status, listing = await call("GET", f"{galley_url}/v1/resources")
    assert listing == {"items": []}

    status, body = await call(
        "POST", f"{galley_url}/v1/apply", data=DR.encode(), headers={"Content-Type": "application/yaml"}
    )
    assert status == 200 and body["applied"][0]["kind"] == "DestinationRule"

    status, body = await call(
        "POST", f"{galley_url}/v1/apply", data=DR.replace("host:", "hots:"), headers={"Content-Type": "text/plain"}
    )
    assert status == 400
    assert body["errors"][0].startswith("request: document 1 (DestinationRule shop/product): spec.")


async def test_bad_requests_get_clear_4xx(galley_url: str) -> None:
    url = f"{galley_url}/v1/apply"
    status, body = await call("POST", url, data=b'{"sources": [', headers={"Content-Type": "application/json"})
    assert status == 400 and body["errors"][0].startswith("request body is not valid JSON: line 1")
    status, body = await call("POST", url, json={"sources": [{"name": "a"}]})
    assert (status, body) == (400, {"errors": ["sources[0]: expected exactly the fields name and content"]})
    status, body = await call("POST", url, json={"sources": [{"name": "a", "content": "x: 1"}], "dryrun": True})
    assert (status, body) == (400, {"errors": ["unknown request field(s): dryrun"]})
    status, body = await call("POST", url, json={"sources": [{"name": "a.yaml", "content": "a: &x 1\nb: *x\n"}]})
    assert status == 400 and "aliases" in body["errors"][0]
    status, body = await call("POST", url, data=b"\xff\xfe", headers={"Content-Type": "application/yaml"})
    assert (status, body) == (400, {"errors": ["request body is not valid UTF-8 (offset 0)"]})
    status, body = await call("GET", f"{galley_url}/v1/resources/envoyfilter/shop/x")
    assert status == 400 and "'envoyfilter' is not supported" in body["errors"][0]
    status, body = await call("POST", url, data=io.BytesIO(b"a" * (MAX_REQUEST_BYTES + 1)))
    assert status == 413 and "byte limit" in body["errors"][0]


async def test_healthz(galley_url: str) -> None:
    assert await call("GET", f"{galley_url}/healthz") == (200, {"status": "ok"})


async def test_warnings_cover_stored_config_and_do_not_block(galley_url: str) -> None:
    status, body = await apply(galley_url, ("vs.yaml", vs()))
    assert status == 200 and body["applied"][0]["action"] == "created"
    assert len(body["warnings"]) == 2  # neither v1 nor v2 is defined yet
    assert "subset 'v2' of host 'product' is not defined" in body["warnings"][1]

    status, body = await apply(galley_url, ("dr.yaml", DR))
    assert (status, body["warnings"]) == (200, [])
    status, body = await apply(galley_url, ("vs.yaml", vs(80)))
    assert (status, body["warnings"]) == (200, [])


async def test_store_outage_is_503_and_unhealthy(nats_url: str, bucket: str) -> None:
    client = await nats.connect(nats_url, name="galley-outage-test", allow_reconnect=False)
    store = await ConfigStore.open(client.jetstream(), bucket=bucket)
    runner = web.AppRunner(create_app(store, lambda: client.is_connected))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    try:
        assert (await call("GET", f"{url}/healthz"))[0] == 200
        await client.close()
        assert (await call("GET", f"{url}/healthz"))[0] == 503
        status, body = await apply(url, ("vs.yaml", vs()))
        assert status == 503 and body["errors"][0].startswith("config store unavailable")
        status, body = await call("GET", f"{url}/v1/resources/vs/shop/product")
        assert status == 503
    finally:
        await runner.cleanup()
        async with await nats.connect(nats_url) as cleanup:
            await cleanup.jetstream().delete_key_value(bucket)
