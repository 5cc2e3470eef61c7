"""The peer metadata wire format: a round trip, and what a decoder refuses."""

from __future__ import annotations

import base64

import pytest

from shared.peer_metadata import PEER_METADATA, PEER_METADATA_ID, PeerMetadata, decode, headers_for

METADATA = PeerMetadata("shop", "reviews-v2", "reviews", "reviews", "v2")


def test_round_trip_and_headers() -> None:
    assert decode(METADATA.encode()) == METADATA
    assert headers_for(METADATA, "reviews~1") == ((PEER_METADATA, METADATA.encode()), (PEER_METADATA_ID, "reviews~1"))


@pytest.mark.parametrize(
    "value",
    [
        "not base64!",
        base64.b64encode(b"[1, 2]").decode(),
        base64.b64encode(b'{"NAMESPACE": "shop"}').decode(),
        base64.b64encode(b'{"NAMESPACE":"a","WORKLOAD_NAME":"b","SERVICE_ACCOUNT":"c","LABELS":[]}').decode(),
        base64.b64encode(b"\xff\xfe").decode(),
        "A" * 5000,
    ],
)
def test_malformed_values_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        decode(value)
