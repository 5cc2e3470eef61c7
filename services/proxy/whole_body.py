"""A response body that arrived whole with its head, read through the body reader interface the relays use."""

from __future__ import annotations

import asyncio

from aiohttp.streams import EmptyStreamReader


class WholeBody(EmptyStreamReader):
    """aiohttp's StreamReader for a body that is all in already: at its end from the start, read from memory.

    Built like aiohttp's own EMPTY_PAYLOAD (a StreamReader without its flow-control state), so a whole
    response costs no reader fed chunk by chunk; every read method hands out what is left."""

    __slots__ = ("_rest",)

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self._rest = body
        self.total_bytes = len(body)

    def __repr__(self) -> str:
        return f"<WholeBody {len(self._rest)} of {self.total_bytes} bytes left>"

    def at_eof(self) -> bool:
        return not self._rest

    def read_nowait(self, n: int = -1) -> bytes:
        rest = self._rest
        if n < 0 or n >= len(rest):
            self._rest = b""
            return rest
        self._rest = rest[n:]
        return rest[:n]

    async def read(self, n: int = -1) -> bytes:
        return self.read_nowait(n)

    async def readany(self) -> bytes:
        return self.read_nowait(-1)

    async def readchunk(self) -> tuple[bytes, bool]:
        if self._rest:
            return self.read_nowait(-1), False
        return await super().readchunk()

    async def readexactly(self, n: int) -> bytes:
        if n > len(self._rest):
            rest = self.read_nowait(-1)
            raise asyncio.IncompleteReadError(rest, n)
        return self.read_nowait(n)

    async def readline(self, *, max_line_length: int | None = None) -> bytes:
        end = self._rest.find(b"\n")
        return self.read_nowait(end + 1 if end >= 0 else -1)
