"""The SNI of a ClientHello as real TLS clients send it (Python's ssl, over memory BIOs), read without a handshake."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from services.proxy.sni import NotClientHello, covers, read_client_hello, server_name


def client_hello(sni: str | None) -> bytes:
    """The first flight of a real TLS client (OpenSSL through Python's ssl) asking for `sni`."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


async def read_from(data: bytes) -> bytes:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await read_client_hello(reader)


async def test_the_server_name_of_a_real_client_hello_is_read_and_every_byte_kept() -> None:
    first = client_hello("Shop.Example.com")
    records = await read_from(first + b"more bytes after the hello")
    assert records == first
    assert server_name(records) == "shop.example.com"


async def test_a_client_hello_without_sni_names_nothing() -> None:
    assert server_name(await read_from(client_hello(None))) is None


async def test_a_hello_split_over_records_is_read_whole() -> None:
    first = client_hello("api.example.com")
    body = first[5:]
    cut = 40
    split = b"\x16\x03\x01" + cut.to_bytes(2, "big") + body[:cut]
    split += b"\x16\x03\x01" + (len(body) - cut).to_bytes(2, "big") + body[cut:]
    records = await read_from(split)
    assert records == split and server_name(records) == "api.example.com"


async def test_plain_text_and_cut_hellos_are_refused() -> None:
    with pytest.raises(NotClientHello):
        await read_from(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(asyncio.IncompleteReadError):
        await read_from(client_hello("a.example.com")[:30])


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*", "anything.test", True),
        ("*.example.com", "shop.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("shop.example.com", "shop.example.com", True),
        ("shop.example.com", "api.example.com", False),
    ],
)
def test_covers(pattern: str, name: str, expected: bool) -> None:
    assert covers(pattern, name) is expected
