"""cancel_until_done: stopping tasks that swallow a cancellation, as 3.11's asyncio.wait_for can make them."""

from __future__ import annotations

import asyncio

from shared.tasks import cancel_until_done


async def test_a_task_that_swallows_its_cancellation_is_cancelled_again() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what wait_for does when its inner result arrives with the cancellation

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_until_done([task]), 5)
    assert task.cancelled()
    assert swallowed == 1


async def test_finished_and_failed_tasks_are_collected_without_raising() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    async def waits() -> None:
        await asyncio.Event().wait()

    failed, waiting = asyncio.create_task(fails()), asyncio.create_task(waits())
    await asyncio.sleep(0)
    await cancel_until_done([failed, waiting])
    assert failed.done() and isinstance(failed.exception(), RuntimeError)
    assert waiting.cancelled()


async def test_nothing_to_cancel_returns_at_once() -> None:
    await asyncio.wait_for(cancel_until_done([]), 1)
