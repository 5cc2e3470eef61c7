"""The per-request cost benchmark drives the sidecar's real immediate paths, not a shortcut around them."""

from __future__ import annotations

from bench.pathcost import CALLER, driver_for, measure


async def test_the_outbound_path_relays_through_the_kept_upstream_connection() -> None:
    async with driver_for("outbound") as driver:
        for _ in range(3):
            driver.one()
        sent = driver.upstream.transport.written  # type: ignore[union-attr]
        assert len(sent) == 3
        assert b"x-request-id: " in sent[0] and b"x-envoy-attempt-count: 1" in sent[0]
        assert [answer[:15] for answer in driver.answered()] == [b"HTTP/1.1 200 OK"] * 3


async def test_the_inbound_path_sees_the_callers_identity_and_answers_with_its_own_metadata() -> None:
    async with driver_for("inbound") as driver:
        driver.one()
        sent = driver.upstream.transport.written  # type: ignore[union-attr]
        assert f"URI={CALLER}".encode() in sent[0]  # XFCC from the caller's certificate
        answer = driver.answered()[0]
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"x-envoy-peer-metadata: " in answer


async def test_measure_reports_cpu_per_request_for_every_round() -> None:
    spent = await measure("outbound", requests=50, rounds=2, warmup=5)
    assert len(spent) == 2 and all(value > 0 for value in spent)
