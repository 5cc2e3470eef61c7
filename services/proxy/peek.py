"""Inbound listener front: accepts each connection, peeks at its first bytes and serves it as mTLS or plain text.

The PeerAuthentication mode is read per connection from the current config snapshot, so a change applies to
the next connection without a restart (the handler re-checks STRICT per request for connections kept alive
across a change). A TLS connection starts with a handshake record: content type 0x16, version major 0x03.

  STRICT      TLS only; plain text is closed before a byte is answered.
  PERMISSIVE  both, told apart by the peek.
  DISABLE     plain text only; a TLS ClientHello is closed unanswered.

Before the first config the mode is STRICT (fail closed). For a workload whose port is declared TCP, an
admitted connection's socket goes to the TCP handler (tcp_inbound.py) instead of the HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from services.proxy.h1server import ImmediateHandler, PassThroughFront
from services.proxy.listeners import SHUTDOWN_TIMEOUT, Listener, low_level_server, tcp_server_socket
from services.proxy.request_view import ViewHandler
from shared.model.peer_authentication import MtlsMode

log = logging.getLogger(__name__)

TcpHandler = Callable[[socket.socket, bool], Awaitable[None]]
"""Takes an admitted connection's socket and whether it speaks TLS; owns the socket from then on."""

PEEK_BYTES = 2
PEEK_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
_PARTIAL_PEEK_PAUSE = 0.005


def looks_like_tls(first: bytes) -> bool:
    """A TLS record carrying a handshake (ClientHello): 0x16 then major version 0x03."""
    return len(first) >= PEEK_BYTES and first[0] == 0x16 and first[1] == 0x03


def admits(mode: MtlsMode, tls: bool) -> bool:
    if mode == MtlsMode.STRICT:
        return tls
    if mode == MtlsMode.DISABLE:
        return not tls
    if mode == MtlsMode.PERMISSIVE:
        return True
    raise ValueError(f"mTLS mode {mode} is not a resolved mode")


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def peek(sock: socket.socket, count: int = PEEK_BYTES) -> bytes:
    """The first `count` bytes the peer sent (fewer only when it closed), left in the socket for the real reader."""
    loop = asyncio.get_running_loop()
    while True:
        await _readable(loop, sock)
        try:
            data = sock.recv(count, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            continue
        if len(data) >= count or not data:
            return data
        await asyncio.sleep(_PARTIAL_PEEK_PAUSE)  # a split first segment: wait for the rest


def no_delay(conn: socket.socket) -> None:
    """TCP_NODELAY on an accepted socket. asyncio sets it only on sockets whose proto is IPPROTO_TCP, and
    one accepted from a `socket.create_server` socket has proto 0: without it, a small write that follows
    an unacknowledged one (TLS session tickets, then the first reply bytes) waits out the peer's 40 ms
    delayed ACK."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PeekingListener(Listener):
    """The inbound listener: one accept loop, each connection served (pass-through front first, aiohttp's
    server for what it does not take) with or without TLS."""

    def __init__(
        self,
        name: str,
        runner: web.ServerRunner,
        front: PassThroughFront,
        sock: socket.socket,
        tls_context: Callable[[], ssl.SSLContext],
        mode: Callable[[], MtlsMode],
        tcp: TcpHandler | None = None,
    ) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(name, runner, host, port, front)
        self._sock = sock
        self._tls_context = tls_context
        self._mode = mode
        self._tcp = tcp
        self._accepting: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.refused = 0
        """Connections closed because the transport did not fit the mode (or the handshake failed)."""

    def start(self) -> None:
        self._accepting = asyncio.create_task(self._accept_loop(), name=f"{self.name} accept")

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = await loop.sock_accept(self._sock)
            except OSError as err:  # e.g. EMFILE: keep serving the connections we have
                log.warning("%s: accept failed: %s", self.name, err)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._serve(conn))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        no_delay(conn)
        loop = asyncio.get_running_loop()
        try:
            first = await asyncio.wait_for(peek(conn), PEEK_TIMEOUT)
            if not first:
                conn.close()
                return
            tls = looks_like_tls(first)
            mode = self._mode()
            if not admits(mode, tls):
                self.refused += 1
                log.info("%s: %s connection refused in mode %s", self.name, "TLS" if tls else "plain-text", mode)
                conn.close()
                return
            if self._tcp is not None:
                await self._tcp(conn, tls)
                return
            context = self._tls_context() if tls else None
            assert self.front is not None, "the inbound listener always has its pass-through front"
            if context is None:
                await loop.connect_accepted_socket(self.front.protocol, conn)
            else:
                await loop.connect_accepted_socket(
                    self.front.protocol,
                    conn,
                    ssl=context,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                )
        except asyncio.CancelledError:
            conn.close()
            raise
        except (OSError, ssl.SSLError, TimeoutError, ValueError, ConnectionError) as err:
            self.refused += 1
            log.info("%s: connection dropped before serving: %s", self.name, err)
            conn.close()

    async def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        for task in list(self._connections):
            task.cancel()
        self._sock.close()
        if self.front is not None:
            await self.front.shutdown(SHUTDOWN_TIMEOUT)
        await self.runner.cleanup()


async def start_peeking_listener(
    name: str,
    handler: ViewHandler,
    host: str,
    port: int,
    tls_context: Callable[[], ssl.SSLContext],
    mode: Callable[[], MtlsMode],
    tcp: TcpHandler | None = None,
    immediate: ImmediateHandler | None = None,
) -> PeekingListener:
    """Bind and serve like `listeners.start_listener`, choosing TLS or plain text per connection."""
    server = low_level_server(handler)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    sock = tcp_server_socket(host, port)
    sock.setblocking(False)
    listener = PeekingListener(name, runner, PassThroughFront(handler, server, immediate), sock, tls_context, mode, tcp)
    listener.start()
    return listener
