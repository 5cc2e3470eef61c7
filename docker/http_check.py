#!/usr/bin/env python3
"""`isthmus-http`: a tiny HTTP/TCP probe for health checks and for poking at the mesh inside a container
(the images carry no curl).

    isthmus-http URL [-H 'name: value']... [-q]   GET URL, print the body; exit 0 on a 2xx answer
    isthmus-http --tcp HOST:PORT                  exit 0 if a TCP connection opens
"""

from __future__ import annotations

import argparse
import socket
import sys
import urllib.error
import urllib.request


def tcp_open(address: str, timeout: float) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def fetch(url: str, headers: list[str], timeout: float, quiet: bool) -> bool:
    request = urllib.request.Request(url)
    for header in headers:
        name, _, value = header.partition(":")
        request.add_header(name.strip(), value.strip())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            body, status = reply.read(), reply.status
    except urllib.error.HTTPError as error:
        body, status = error.read(), error.code
    except OSError as error:
        print(f"isthmus-http: {url}: {error}", file=sys.stderr)
        return False
    if not quiet:
        sys.stdout.write(body.decode(errors="replace"))
        if body and not body.endswith(b"\n"):
            sys.stdout.write("\n")
    if not 200 <= status < 300:
        print(f"isthmus-http: {url}: HTTP {status}", file=sys.stderr)
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(prog="isthmus-http", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", help="URL to GET")
    parser.add_argument("--tcp", metavar="HOST:PORT", help="only check that a TCP connection opens")
    parser.add_argument("-H", "--header", action="append", default=[], help="request header 'name: value'")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    parser.add_argument("-t", "--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args()
    if args.tcp:
        return 0 if tcp_open(args.tcp, args.timeout) else 1
    if not args.url:
        parser.error("a URL or --tcp HOST:PORT is required")
    return 0 if fetch(args.url, args.header, args.timeout, args.quiet) else 1


if __name__ == "__main__":
    sys.exit(main())
