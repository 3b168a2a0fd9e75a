"""Wake watchers of a task when its log or state changes, without polling the database."""

from __future__ import annotations

import asyncio
import contextlib


class TaskSignals:
    """One event per watched task, replaced on each notify so every waiter wakes once."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def notify(self, task_id: str) -> None:
        """Something about the task changed."""
        event = self._events.pop(task_id, None)
        if event is not None:
            event.set()

    async def wait(self, task_id: str, timeout: float) -> None:
        """Wait for the next change, or `timeout` (the safety net when another node wrote)."""
        event = self._events.setdefault(task_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
