"""A response that arrives whole in one read is delivered from memory; every other shape still goes through the
full parser, and a connection moves between the two from one response to the next."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from services.proxy.h1client import _Connection
from services.proxy.whole_body import WholeBody

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class _Answers:
    def __init__(self) -> None:
        self.got: list[tuple[Any, aiohttp.StreamReader | None, BaseException | None]] = []

    def __call__(self, message: Any, body: aiohttp.StreamReader | None, error: BaseException | None) -> None:
        self.got.append((message, body, error))


def _connection() -> tuple[_Connection, _Transport]:
    connection = _Connection(asyncio.get_running_loop())
    transport = _Transport()
    connection.connection_made(transport)
    return connection, transport


def _expect(connection: _Connection, head_request: bool = False) -> _Answers:
    answers = _Answers()
    connection.start_calling(head_request, answers)
    return answers


async def test_a_response_whole_in_one_read_is_read_from_memory_and_the_connection_stays_usable() -> None:
    connection, _ = _connection()
    for _ in range(3):
        answers = _expect(connection)
        connection.data_received(OK)
        [(message, body, error)] = answers.got
        assert error is None and message.code == 200 and message.headers["Content-Type"] == "text/plain"
        assert type(body) is WholeBody and body.is_eof() and body.read_nowait(-1) == b"hello"
        assert connection.reusable
        connection.finish()


async def test_a_response_split_across_reads_goes_through_the_full_parser_then_the_next_one_is_whole_again() -> None:
    connection, _ = _connection()
    answers = _expect(connection)
    connection.data_received(OK[:20])  # part of the head
    connection.data_received(OK[20:-2])
    [(message, body, _)] = answers.got
    assert message.code == 200 and type(body) is not WholeBody and body is not None and not body.is_eof()
    connection.data_received(OK[-2:])
    assert body.is_eof() and body.read_nowait(-1) == b"hello"
    connection.finish()
    answers = _expect(connection)
    connection.data_received(OK)
    assert type(answers.got[0][1]) is WholeBody and connection.reusable


@pytest.mark.parametrize(
    ("response", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n", b"abcd"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", b"ok"),  # bytes nobody asked for
    ],
    ids=["chunked", "interim-then-final", "no-content", "extra-bytes"],
)
async def test_other_shapes_in_one_read_are_framed_by_the_full_parser(response: bytes, body: bytes) -> None:
    connection, _ = _connection()
    answers = _expect(connection)
    connection.data_received(response)
    [(message, reader, error)] = answers.got
    assert error is None and message.code in (200, 204)
    assert type(reader) is not WholeBody and reader is not None
    assert reader.is_eof() and reader.read_nowait(-1) == body


@pytest.mark.parametrize(
    ("head_request", "status_line"),
    [(True, b"HTTP/1.1 200 OK"), (False, b"HTTP/1.1 304 Not Modified")],
    ids=["response-to-head", "not-modified"],
)
async def test_bytes_after_a_response_that_has_no_body_are_never_its_body(
    head_request: bool, status_line: bytes
) -> None:
    connection, transport = _connection()
    answers = _expect(connection, head_request)
    connection.data_received(status_line + b"\r\nContent-Length: 5\r\n\r\nhello")  # a server that sends one
    [(_, body, error)] = answers.got
    assert body is None and isinstance(error, aiohttp.ClientPayloadError), "the stray bytes fail the exchange"
    assert transport.closed and not connection.reusable


async def test_an_empty_response_to_head_is_delivered_at_its_end() -> None:
    connection, _ = _connection()
    answers = _expect(connection, head_request=True)
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    [(message, body, _)] = answers.got
    assert message.code == 200 and body is not None and body.is_eof() and body.read_nowait(-1) == b""
    assert connection.reusable


async def test_a_body_that_looks_like_a_response_stays_the_body_of_the_one_it_belongs_to() -> None:
    inner = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    connection, _ = _connection()
    answers = _expect(connection)
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(inner))
    connection.data_received(inner)
    [(_, body, _)] = answers.got
    assert body is not None and body.is_eof() and body.read_nowait(-1) == inner


async def test_a_whole_response_that_closes_the_connection_leaves_it_unusable() -> None:
    connection, _ = _connection()
    answers = _expect(connection)
    connection.data_received(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye")
    assert type(answers.got[0][1]) is WholeBody and not connection.reusable


async def test_a_malformed_head_fails_the_request_and_closes_the_connection() -> None:
    connection, transport = _connection()
    answers = _expect(connection)
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nhello")
    [(message, body, error)] = answers.got
    assert message is None and body is None and isinstance(error, aiohttp.ClientPayloadError)
    assert transport.closed and not connection.reusable


async def test_a_whole_body_reads_like_a_stream_reader() -> None:
    body = WholeBody(b"line one\nline two")
    assert body.total_bytes == 17 and body.is_eof() and not body.at_eof() and body.exception() is None
    assert await body.readline() == b"line one\n"
    assert await body.readexactly(4) == b"line"
    assert body.read_nowait(1) == b" "
    assert [chunk async for chunk in body.iter_chunked(2)] == [b"tw", b"o"]
    assert body.at_eof() and await body.read() == b""
    with pytest.raises(asyncio.IncompleteReadError):
        await WholeBody(b"ab").readexactly(3)
