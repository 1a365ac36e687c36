"""Ending the relay's background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]

# A cancelled task only has to unwind; one that takes longer is left behind.
_UNWIND_SECONDS = 2.0


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel ``tasks`` and wait until they have ended, so none of them still runs (say,
    on a closed Redis connection) after its owner has stopped."""
    current = asyncio.current_task()
    live = [task for task in tasks if task is not None and task is not current]
    for task in live:
        task.cancel()
    if live:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_UNWIND_SECONDS):
                await asyncio.gather(*live, return_exceptions=True)
