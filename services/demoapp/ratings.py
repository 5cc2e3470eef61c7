"""The demo's gRPC workload: `demo.Ratings/Get` answers which service and version served the call and which SPIFFE
identity called it (from the sidecar's x-forwarded-client-cert), as JSON bytes; no generated code is needed.

`--call HOST:PORT` makes it the client instead: it calls Get through a sidecar's outbound port with the service as
authority and prints one JSON line per call (`{"error": ...}` for a failed one)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import grpc
import grpc.aio

from services.demoapp.app import caller_identity

SERVICE = "demo.Ratings"
GET = f"/{SERVICE}/Get"


class Ratings:
    def __init__(self, service: str, version: str) -> None:
        self.service = service
        self.version = version

    async def get(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        metadata = dict(context.invocation_metadata() or ())
        answer = {
            "service": self.service,
            "version": self.version,
            "product": request.decode("utf-8", "replace"),
            "stars": 4 if self.version == "v1" else 5,
            "caller": caller_identity(str(metadata.get("x-forwarded-client-cert", "")) or None),
        }
        return json.dumps(answer).encode()


async def serve(service: str, version: str, port: int) -> None:
    ratings = Ratings(service, version)
    server = grpc.aio.server()
    handlers = {"Get": grpc.unary_unary_rpc_method_handler(ratings.get)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def call(target: str, authority: str, count: int) -> int:
    failed = 0
    async with grpc.aio.insecure_channel(target, options=[("grpc.default_authority", authority)]) as channel:
        get = channel.unary_unary(GET)
        for i in range(count):
            try:
                print((await get(f"product-{i}".encode(), timeout=10)).decode(), flush=True)
            except grpc.aio.AioRpcError as err:
                failed += 1
                print(json.dumps({"error": err.code().name, "details": err.details()}), flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.demoapp.ratings", description=__doc__)
    parser.add_argument("--service", default="ratings")
    parser.add_argument("--version", default="v1")
    parser.add_argument("--port", type=int, help="serve: the gRPC port on 127.0.0.1")
    parser.add_argument("--call", metavar="HOST:PORT", help="call instead: through this sidecar outbound port")
    parser.add_argument("--count", type=int, default=1, help="with --call: how many calls (default 1)")
    args = parser.parse_args(argv)
    if args.call:
        return asyncio.run(call(args.call, args.service, args.count))
    if args.port is None:
        parser.error("give --port to serve or --call to call")
    asyncio.run(serve(args.service, args.version, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
