"""The demo workload: GET / says which service and version answered and which SPIFFE identity called it;
GET /call/<service>[/<path>] calls another service through the local sidecar's outbound listener."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

# Headers an application forwards so routing (end-user) and tracing follow one request through the mesh.
PROPAGATED_HEADERS = (
    "end-user",
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
)

SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)
IDENTITY_KEY = web.AppKey("identity", dict)


def caller_identity(xfcc: str | None) -> str | None:
    """The `URI=` element of an x-forwarded-client-cert header (the caller's SPIFFE ID), if any."""
    if not xfcc:
        return None
    for element in xfcc.split(";"):
        key, _, value = element.partition("=")
        if key.strip().lower() == "uri":
            return value.strip().strip('"')
    return None


async def whoami(request: web.Request) -> web.Response:
    identity: dict[str, str] = request.app[IDENTITY_KEY]
    body: dict[str, Any] = {
        **identity,
        "path": request.path,
        "caller": caller_identity(request.headers.get("x-forwarded-client-cert")),
    }
    return web.json_response(body)


async def call(request: web.Request) -> web.Response:
    """Calls http://<service>/<path> through the sidecar; returns this service's identity plus the answer."""
    service = request.match_info["service"]
    path = request.match_info.get("path", "")
    headers = {name: request.headers[name] for name in PROPAGATED_HEADERS if name in request.headers}
    session = request.app[SESSION_KEY]
    identity: dict[str, str] = request.app[IDENTITY_KEY]
    try:
        async with session.get(f"http://{service}/{path}", headers=headers) as reply:
            text = await reply.text()
            try:
                upstream: Any = await reply.json(content_type=None)
            except ValueError:
                upstream = text
            return web.json_response({**identity, "status": reply.status, "upstream": upstream}, status=reply.status)
    except aiohttp.ClientError as err:
        return web.json_response({**identity, "status": 502, "error": str(err)}, status=502)


def build_app(service: str, version: str, sidecar_outbound: str) -> web.Application:
    app = web.Application()
    app[IDENTITY_KEY] = {"service": service, "version": version}

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        # The sidecar is the app's HTTP proxy: plain HTTP to the sidecar, which does discovery, routing and mTLS.
        session = aiohttp.ClientSession(proxy=sidecar_outbound, timeout=aiohttp.ClientTimeout(total=30))
        app[SESSION_KEY] = session
        yield
        await session.close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/call/{service}", call)
    app.router.add_get("/call/{service}/{path:.*}", call)
    app.router.add_route("*", "/{tail:.*}", whoami)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="isthmus-demoapp", description=__doc__)
    parser.add_argument("--service", required=True, help="service name this app answers as")
    parser.add_argument("--version", default="v1", help="version this app answers as (default v1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument(
        "--sidecar", default="http://127.0.0.1:15001", help="the local sidecar's outbound listener (HTTP proxy URL)"
    )
    args = parser.parse_args(argv)
    web.run_app(build_app(args.service, args.version, args.sidecar), host="127.0.0.1", port=args.port, print=None)
    return 0
