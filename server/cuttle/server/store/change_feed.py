"""Task changes between server nodes that share one PostgreSQL database: LISTEN/NOTIFY.

A node's followers are woken by what this node changes (engine/notifications.py); what another
node changed reaches them here. Each node publishes the id of every task it changed (once it
committed: NOTIFY on a connection of its own, several ids in one round trip) and listens on a
second connection; a notification from another node wakes that task's followers here, which
then read the store (one indexed seek). So a follower on node B sees the lines node A stored as
soon as A committed them, without a poll.

Nothing is lost for good: a publisher that cannot reach the database drops its pending ids
after saying so in the log, and followers fall back to their slow poll of the store
(follow_poll_interval_seconds) for that window; a listener that reconnects wakes every follower
here once, since it may have missed notifications meanwhile. Notifications go to every
database session listening on the channel, whatever its schema: a node ignores ids it has no
follower for, so nodes of other installations in the same database cost nothing but a wake.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import psycopg
import structlog
from sqlalchemy import URL

log = structlog.get_logger(__name__)

CHANNEL = "cuttle_task_changes"
# Ids per NOTIFY round trip at most (a payload is one id; a transaction may hold many).
_MAX_BATCH = 500
_NOTIFY_MANY = "SELECT pg_notify(%s, id) FROM unnest(%s::text[]) AS id"


def conninfo(url: URL) -> str:
    """The libpq connection string of an SQLAlchemy PostgreSQL URL (its driver name dropped)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresChangeFeed:
    """Publishes this node's task changes to the other nodes and hands theirs to callbacks."""

    def __init__(
        self,
        dsn: str,
        changed_elsewhere: Callable[[str], None],
        maybe_missed: Callable[[], None],
        *,
        retry_seconds: float = 1.0,
    ) -> None:
        self._dsn = dsn
        self._changed_elsewhere = changed_elsewhere
        self._maybe_missed = maybe_missed
        self._retry = retry_seconds
        self._pending: dict[str, None] = {}
        self._wake = asyncio.Event()
        # The backend of our publishing connection: notifications it sent are our own.
        self._publisher_pid: int | None = None
        self._loops: list[asyncio.Task[None]] = []
        # Set once the listener listens (tests wait for it; nothing else needs to).
        self.listening = asyncio.Event()

    def publish(self, task_id: str) -> None:
        """Tell the other nodes that this task changed (sent soon, without waiting here)."""
        self._pending[task_id] = None
        self._wake.set()

    async def start(self) -> None:
        """Start listening and publishing."""
        self._loops = [
            asyncio.create_task(self._listen(), name="change-feed-listen"),
            asyncio.create_task(self._publish(), name="change-feed-publish"),
        ]

    async def stop(self) -> None:
        """Stop both loops and close their connections."""
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    # Anything another node changed before this LISTEN was not heard.
                    self._maybe_missed()
                    async for note in conn.notifies():
                        if note.pid != self._publisher_pid:
                            self._changed_elsewhere(note.payload)
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("change_feed_listen_failed", error=str(exc), retry=self._retry)
                await asyncio.sleep(self._retry)

    async def _publish(self) -> None:
        conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    ids = list(self._pending)[:_MAX_BATCH]
                    for task_id in ids:
                        del self._pending[task_id]
                    try:
                        if conn is None or conn.closed:
                            conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
                            self._publisher_pid = conn.info.backend_pid
                        await conn.execute(_NOTIFY_MANY, (CHANNEL, ids))
                    except psycopg.Error as exc:
                        # Followers elsewhere see these changes at their next poll instead.
                        log.warning(
                            "change_feed_publish_failed",
                            error=str(exc),
                            dropped=len(ids),
                            retry=self._retry,
                        )
                        if conn is not None:
                            await conn.close()
                        conn = None
                        await asyncio.sleep(self._retry)
        finally:
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
