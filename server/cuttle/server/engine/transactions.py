"""Store work off the event loop: each call is one transaction on a bounded thread pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")


class Transactions:
    """Runs repository functions in a transaction each, on a small pool of threads."""

    def __init__(self, sessions: sessionmaker[Session], workers: int = 4) -> None:
        self._sessions = sessions
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="store")

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in a transaction that commits when it returns."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, work)

    def _run(self, work: Callable[[Session], T]) -> T:
        with self._sessions.begin() as session:
            return work(session)

    def close(self) -> None:
        """Wait for running transactions and stop the pool."""
        self._pool.shutdown(wait=True)
