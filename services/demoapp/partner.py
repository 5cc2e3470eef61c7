"""The demo's partner API, a service outside the mesh: an HTTPS server with no sidecar and no Consul entry, which
mesh workloads reach through a ServiceEntry while their sidecar originates the TLS connection.

GET /<path> answers with the path, a fixed quote and the TLS server name (SNI) the caller asked for."""

from __future__ import annotations

import argparse
import ssl
import sys
import weakref
from typing import Any

from aiohttp import web

QUOTE = {"currency": "EUR", "amount": "42.00", "fee": "0.25"}


def server_context(cert: str, key: str) -> tuple[ssl.SSLContext, weakref.WeakKeyDictionary[ssl.SSLObject, str]]:
    """The server's TLS context, and the server name each connection asked for (filled as handshakes arrive)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()

    def remember_sni(connection: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        if name is not None:
            names[connection] = name

    context.sni_callback = remember_sni
    return context, names


def build_app(names: weakref.WeakKeyDictionary[ssl.SSLObject, str]) -> web.Application:
    async def quote(request: web.Request) -> web.Response:
        transport = request.transport
        connection = transport.get_extra_info("ssl_object") if transport is not None else None
        body: dict[str, Any] = {
            "partner": "payments-gateway",
            "path": request.path,
            "quote": QUOTE,
            "sni": names.get(connection) if connection is not None else None,
        }
        return web.json_response(body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", quote)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="isthmus-demo-partner", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--tls-cert", required=True, help="server certificate (PEM)")
    parser.add_argument("--tls-key", required=True, help="server private key (PEM)")
    args = parser.parse_args(argv)
    context, names = server_context(args.tls_cert, args.tls_key)
    web.run_app(build_app(names), host="127.0.0.1", port=args.port, ssl_context=context, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
