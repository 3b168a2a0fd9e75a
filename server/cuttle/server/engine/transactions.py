"""Store work off the event loop: each call is one transaction on a bounded thread pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.store.database import READ_ONLY

T = TypeVar("T")


class Transactions:
    """Runs repository functions in a transaction each, on a small pool of threads."""

    def __init__(self, sessions: sessionmaker[Session], workers: int = 4) -> None:
        self._sessions = sessions
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="store")

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in a transaction that commits when it returns."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, work)

    async def read(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in a transaction that only reads (on SQLite: no write lock)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._read, work)

    def _run(self, work: Callable[[Session], T]) -> T:
        with self._sessions.begin() as session:
            return work(session)

    def _read(self, work: Callable[[Session], T]) -> T:
        with self._sessions() as session:
            # Set before the first statement, so SQLite begins DEFERRED: listings and log reads
            # then run beside a writer instead of queueing behind it. Nothing is committed.
            session.connection(execution_options={READ_ONLY: True})
            try:
                return work(session)
            finally:
                session.rollback()

    def close(self) -> None:
        """Wait for running transactions and stop the pool."""
        self._pool.shutdown(wait=True)
