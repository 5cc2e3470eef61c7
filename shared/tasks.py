"""Stopping background tasks for good.

On Python 3.11, `asyncio.wait_for` returns the inner result instead of raising CancelledError when the
cancellation and the result arrive together (nats-py waits that way for every request), so a task in a
`while True` loop can swallow one cancellation and go back to waiting forever. Cancelling once and
gathering then hangs the stop; `cancel_until_done` cancels again until every task has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

RECANCEL_EVERY = 0.1
"""Seconds between cancellations of a task that is still running."""


async def cancel_until_done(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel the tasks, and cancel again the ones still running, until all have ended. Their results and
    exceptions are retrieved (a task's own done-callback is where failures get logged)."""
    pending = {task for task in tasks if not task.done()}
    all_tasks = set(pending)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
    for task in all_tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()
