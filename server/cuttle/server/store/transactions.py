"""Store work off the event loop: each call is one transaction on a bounded thread pool.

A transaction that fails because the database is momentarily unable to serve it — SQLite locked
or busy past its busy timeout, a PostgreSQL connection lost, a serialization failure — is rolled
back and run again from the start with capped, jittered backoff, for as long as the caller's
retry window allows. The work functions are repository calls that only touch their session, so
running one again is safe. A full disk is not retried here: it is reported as ServerDiskFull,
for the engine to end the affected task with that reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import structlog
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cuttle.protocol.backoff import Backoff
from cuttle.server.store.database import READ_ONLY
from cuttle.server.store.errors import ServerDiskFull, StoreUnavailable

T = TypeVar("T")
log = structlog.get_logger(__name__)

# SQLite's and PostgreSQL's words for "try again" and "no space left".
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy")
_SQLITE_FULL = ("database or disk is full", "disk i/o error")
# PostgreSQL SQLSTATEs: serialization failure, deadlock, lock not available, admin shutdown,
# cannot connect now; class 08 is any connection exception.
_PG_TRANSIENT = frozenset({"40001", "40P01", "55P03", "57P01", "57P03"})
_PG_FULL = frozenset({"53100"})


def disk_full(exc: BaseException) -> bool:
    """Whether a database error says the server's disk (or its quota) is full."""
    if not isinstance(exc, DBAPIError):
        return False
    text = str(exc.orig).lower()
    return any(w in text for w in _SQLITE_FULL) or _sqlstate(exc) in _PG_FULL


def transient(exc: BaseException) -> bool:
    """Whether a database error goes away by running the transaction again."""
    if not isinstance(exc, DBAPIError) or disk_full(exc):
        return False
    if exc.connection_invalidated:
        return True
    state = _sqlstate(exc)
    if state is not None:
        return state in _PG_TRANSIENT or state.startswith("08")
    text = str(exc.orig).lower()
    if any(w in text for w in _SQLITE_TRANSIENT):
        return True
    # psycopg raises OperationalError without a SQLSTATE when the server went away.
    return isinstance(exc, OperationalError) and exc.orig.__class__.__module__.startswith("psycopg")


def _sqlstate(exc: DBAPIError) -> str | None:
    state = getattr(exc.orig, "sqlstate", None)
    return state if isinstance(state, str) else None


@dataclass(frozen=True)
class RetryPolicy:
    """How long a transaction keeps being retried while the database cannot serve it."""

    # 0: fail at the first error (the admin API answers "busy" and lets its caller retry).
    window_seconds: float = 0.0
    initial_delay: float = 0.05
    max_delay: float = 2.0


class Transactions:
    """Runs repository functions in a transaction each, on a small pool of threads."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        workers: int = 4,
        retry: RetryPolicy | None = None,
        *,
        _pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self._sessions = sessions
        self._owner = _pool is None
        self._pool = _pool or ThreadPoolExecutor(max_workers=workers, thread_name_prefix="store")
        self.retry = retry or RetryPolicy()

    def with_retry(self, window_seconds: float, max_delay: float | None = None) -> Transactions:
        """The same pool and database, with transactions retried for up to window_seconds."""
        policy = dataclasses.replace(self.retry, window_seconds=window_seconds)
        if max_delay is not None:
            policy = dataclasses.replace(policy, max_delay=max_delay)
        return Transactions(self._sessions, retry=policy, _pool=self._pool)

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in a transaction that commits when it returns."""
        return await self._retrying(self._run, work)

    async def read(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in a transaction that only reads (on SQLite: no write lock)."""
        return await self._retrying(self._read, work)

    async def _retrying(
        self, body: Callable[[Callable[[Session], T]], T], work: Callable[[Session], T]
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.retry.window_seconds
        # Made at the first retry: a Backoff seeds a random generator from the OS, a cost
        # every transaction would pay for nothing (the API's hot paths run several each).
        backoff: Backoff | None = None
        attempt = 0
        while True:
            attempt += 1
            try:
                return await loop.run_in_executor(self._pool, body, work)
            except DBAPIError as exc:
                if disk_full(exc):
                    raise ServerDiskFull(str(exc.orig)) from exc
                if not transient(exc):
                    raise
                if backoff is None:
                    policy = self.retry
                    backoff = Backoff(initial=policy.initial_delay, maximum=policy.max_delay)
                delay = backoff.next_delay()
                if time.monotonic() + delay > deadline:
                    if self.retry.window_seconds <= 0:
                        raise
                    raise StoreUnavailable(
                        f"the database could not serve a transaction for "
                        f"{self.retry.window_seconds:g}s ({attempt} attempts): {exc.orig}"
                    ) from exc
                log.warning(
                    "transaction_retrying", error=str(exc.orig), attempt=attempt, delay=delay
                )
                await asyncio.sleep(delay)

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
        """Wait for running transactions and stop the pool (only the instance that made it)."""
        if self._owner:
            self._pool.shutdown(wait=True)
