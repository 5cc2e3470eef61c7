"""Data-plane benchmark upstream: a minimal HTTP/1.1 keep-alive server on uvloop answering every request with 1 KB.

Run as its own process (`python -m bench.upstream --port N`), so its CPU is not counted against the proxies
and the load generator. It reads each request's head, skips a Content-Length body and answers one pre-built
response; nothing else of HTTP is implemented.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import uvloop

BODY = b"x" * 1024
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\nConnection: keep-alive\r\n\r\n"
    + BODY
)


class _Serve(asyncio.Protocol):
    __slots__ = ("_buffer", "_skip", "_transport")

    def __init__(self) -> None:
        self._buffer = b""
        self._skip = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        answers = 0
        while True:
            if self._skip:
                taken = min(self._skip, len(buffer))
                self._skip -= taken
                buffer = buffer[taken:]
                if self._skip:
                    break
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            buffer = buffer[end + 4 :]
            marker = head.find(b"\r\ncontent-length:")
            if marker >= 0:
                line_end = head.find(b"\r\n", marker + 2)
                self._skip = int(head[marker + 17 : line_end if line_end >= 0 else None])
            answers += 1
        self._buffer = buffer
        if answers and self._transport is not None:
            self._transport.write(RESPONSE * answers)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    await until_signalled(await loop.create_server(_Serve, host, port, backlog=1024))


async def until_signalled(server: asyncio.Server) -> None:
    """Say "ready" on stdout (the benchmark waits for that line), serve until SIGTERM or SIGINT, then close."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="1 KB HTTP/1.1 upstream for the data-plane benchmark")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
