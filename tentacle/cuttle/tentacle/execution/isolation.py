"""Named mutexes that keep fully isolated scripts from running at the same time on a machine.

Within one Tentacle an ``asyncio.Lock`` per name orders the waiters fairly; an ``fcntl.flock`` on
``home/mutex/<name>.lock`` also excludes a second Tentacle sharing the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

__all__ = ["MutexMap"]

_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# How long to wait between attempts at another process's flock. Only reached when a second
# Tentacle on the host holds the mutex; flock has no async wait, so this is a bounded retry.
_FLOCK_RETRY = 0.05


class MutexMap:
    """One async lock (plus a host-wide file lock) per mutex name."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._locks: dict[str, asyncio.Lock] = {}

    def _file_for(self, name: str) -> Path:
        # Mutex names come from the server; never let one become a path.
        safe = name if _SAFE.fullmatch(name) else hashlib.sha256(name.encode()).hexdigest()
        return self._directory / f"{safe}.lock"

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        """Hold the named mutex for the duration of the block; wait (cancellably) to get it."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            fd = await asyncio.to_thread(self._open, name)
            try:
                # No event exists for "another process released its flock": bounded retry.
                while not _try_flock(fd):  # noqa: ASYNC110
                    await asyncio.sleep(_FLOCK_RETRY)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the flock

    def locked(self, name: str) -> bool:
        """Whether this Tentacle currently holds (or is handing over) the named mutex."""
        lock = self._locks.get(name)
        return lock is not None and lock.locked()

    def _open(self, name: str) -> int:
        self._directory.mkdir(parents=True, exist_ok=True)
        return os.open(self._file_for(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
