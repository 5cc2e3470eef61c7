"""The TCP metadata block: Istio's framing, and how the parser splits it off the byte stream in any chunking."""

from __future__ import annotations

import struct

from services.proxy.tcp_peer_exchange import BlockParser
from shared.peer_metadata import BLOCK_MAGIC, PeerMetadata, block_for, decode

METADATA = PeerMetadata("default", "billing-v1", "billing", "billing", "v1")


def feed_all(parser: BlockParser, chunks: list[bytes]) -> bytes:
    return b"".join(parser.feed(chunk) for chunk in chunks)


def test_block_is_magic_length_then_the_header_value() -> None:
    block = block_for(METADATA)
    magic, length = struct.unpack("!II", block[:8])
    assert magic == BLOCK_MAGIC == 0x3D230467
    assert length == len(block) - 8
    assert decode(block[8:].decode("ascii")) == METADATA


def test_block_split_off_in_every_chunking() -> None:
    stream = block_for(METADATA) + b"application bytes"
    for size in (1, 3, 7, 8, 9, len(stream)):
        parser = BlockParser()
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert feed_all(parser, chunks) == b"application bytes"
        assert parser.done
        assert parser.payload == block_for(METADATA)[8:]


def test_bytes_without_the_magic_are_the_applications() -> None:
    parser = BlockParser()
    assert feed_all(parser, [b"\x3d\x23", b"\x00 not a block", b" and more"]) == b"\x3d\x23\x00 not a block and more"
    assert parser.done and parser.payload is None


def test_an_oversized_block_is_skipped_not_held() -> None:
    parser = BlockParser(limit=16)
    big = struct.pack("!II", BLOCK_MAGIC, 100) + b"x" * 100
    assert feed_all(parser, [big[:50], big[50:] + b"after"]) == b"after"
    assert parser.done and parser.payload is None


def test_an_empty_block_ends_at_its_header() -> None:
    parser = BlockParser()
    assert parser.feed(struct.pack("!II", BLOCK_MAGIC, 0) + b"data") == b"data"
    assert parser.payload == b""
