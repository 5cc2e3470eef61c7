"""`isthmus dashboard`: serve the live service graph page (see services/dashboard)."""

from __future__ import annotations

from typing import Any

from services.dashboard import server


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="serve the mesh dashboard: service graph with requests/s, errors, p99, mTLS, proxy sync state",
        description="Scrapes every sidecar found in Consul and shows the live service graph on a local page.",
    )
    server.add_arguments(parser)
    parser.set_defaults(handler=server.run)
