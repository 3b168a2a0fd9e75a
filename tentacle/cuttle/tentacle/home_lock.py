"""One Tentacle per home: an exclusive lock on `<home>/tentacle.lock`, naming its holder's PID.

Two agents on one home would share the ticket journals: when one stops, the other reports the
first one's running scripts as lost. `tentacle run` holds the lock for its whole life; the kernel
drops it when the process dies however it dies, so a stale lock file never blocks a restart.
The descriptor is not inherited by scripts (Python opens files close-on-exec), so a script that
outlives its agent does not keep the home locked either.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from cuttle.tentacle.config import ConfigError

LOCK_FILE = "tentacle.lock"


class HomeLocked(ConfigError):
    """Another process holds the home's lock; the message names it."""

    def __init__(self, path: Path, holder: int | None, doing: str) -> None:
        who = f"process {holder}" if holder else "another process (PID not yet recorded)"
        super().__init__(
            f"cannot {doing}: {path.parent} is in use by {who}, a `tentacle run` holding "
            f"{path}; stop it first (one Tentacle per home)"
        )
        self.holder = holder


class HomeLock:
    """The exclusive, non-blocking lock on an instance home, held until released."""

    def __init__(self, home: Path, doing: str) -> None:
        self.path = home.absolute() / LOCK_FILE
        # What the caller wanted to do, for the refusal: "run the agent", "replace ...".
        self.doing = doing
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and record our PID, or raise HomeLocked naming the holder at once."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise HomeLocked(self.path, holder_pid(self.path), self.doing) from None
        except BaseException:
            os.close(fd)
            raise
        # Only the holder writes the file, so the PID in it is always the holder's.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would race with the next holder)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> HomeLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def holder_pid(path: Path) -> int | None:
    """The PID recorded in a lock file, if any."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
