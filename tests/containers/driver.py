"""Traffic from inside a demo "VM": the container suite pipes this script into `python3 -` in a VM container,
where it calls the VM's own app (which listens on 127.0.0.1 only) and prints one JSON record per request.

    python3 - PATH [--count N | --seconds S] [--concurrency C] [-H 'name: value']...

Each record is [when the request was sent (wall clock, epoch seconds), HTTP status (0: no answer), upstream
version, upstream caller]: the demo app's GET /call/<service>/<path> answers with the upstream's JSON, whose
`version` says which subset served it and whose `caller` is the SPIFFE ID the upstream's sidecar saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

APP = "http://127.0.0.1:8080"
Record = tuple[float, int, str | None, str | None]


def parse(status: int, body: Any) -> tuple[int, str | None, str | None]:
    upstream = body.get("upstream") if isinstance(body, dict) else None
    if not isinstance(upstream, dict):
        return status, None, None
    return status, upstream.get("version"), upstream.get("caller")


async def drive(path: str, count: int, seconds: float, concurrency: int, headers: dict[str, str]) -> list[Record]:
    records: list[Record] = []
    started = time.time()
    remaining = count
    timeout = aiohttp.ClientTimeout(total=10)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while True:
            if seconds > 0:
                if time.time() - started >= seconds:
                    return
            else:
                if remaining <= 0:
                    return
                remaining -= 1
            sent = time.time()
            try:
                async with session.get(f"{APP}{path}", headers=headers) as reply:
                    status, version, caller = parse(reply.status, await reply.json(content_type=None))
            except (aiohttp.ClientError, TimeoutError, ValueError):
                status, version, caller = 0, None, None
            records.append((sent, status, version, caller))

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return records


def main() -> int:
    parser = argparse.ArgumentParser(prog="driver")
    parser.add_argument("path", help="path on the VM's app, e.g. /call/product-service/")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("-H", "--header", action="append", default=[])
    args = parser.parse_args()
    headers = {name.strip(): value.strip() for name, _, value in (h.partition(":") for h in args.header)}
    records = asyncio.run(drive(args.path, args.count, args.seconds, args.concurrency, headers))
    json.dump(records, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
