"""Room kept on the database's disk for the writes that end a task when the disk fills.

When the disk fills, the write that failed was storing output; the one that must land next
records that the task failed and why. On a disk with no room at all it cannot land, and the
task would read `running` until someone frees space. So the server keeps a file of reserved
bytes beside the database, gives it up the moment a task fails for a full disk, and takes it
back once there is room again.

The functions block (file system calls); callers run them off the event loop.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

RESERVE_FILE = "cuttle.disk-reserve"


class DiskReserve:
    """A file of `size` bytes in `directory`, released when the space is needed."""

    def __init__(self, directory: Path, size: int) -> None:
        self.path = directory / RESERVE_FILE
        self.size = size

    def ensure(self) -> bool:
        """Take the reserve back if it is missing and twice its size is free; True if held."""
        if self.size <= 0:
            return False
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_size >= self.size:
                return True
        try:
            stat = os.statvfs(self.path.parent)
        except OSError:
            return False
        # Only from plenty: the reserve must never be what fills the disk.
        if stat.f_bavail * stat.f_frsize < 2 * self.size:
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                # Allocated, not sparse: the blocks must really be ours to give back.
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
        except OSError as exc:
            self.path.unlink(missing_ok=True)
            log.warning("disk_reserve_unavailable", path=str(self.path), error=str(exc))
            return False
        log.info("disk_reserve_held", path=str(self.path), size=self.size)
        return True

    def release(self) -> bool:
        """Give the reserved bytes back to the disk; True if there were any."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("disk_reserve_released", path=str(self.path), size=self.size)
        return True
