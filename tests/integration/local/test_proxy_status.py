"""`isthmus proxy-status` reads both proxy buckets within a bound, and says so when it cannot."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.cli import proxy_status

pytestmark = pytest.mark.integration


async def test_a_bucket_read_that_does_not_end_is_reported_not_waited_on(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(js: Any, bucket: str) -> dict[str, bytes]:
        await asyncio.Event().wait()
        return {}

    monkeypatch.setattr(proxy_status, "LIST_TIMEOUT", 0.2)
    monkeypatch.setattr(proxy_status, "_entries", never)
    with pytest.raises(proxy_status.StatusUnavailable, match="did not finish within"):
        await proxy_status.collect(nats_url)
