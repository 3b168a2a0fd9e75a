"""Package bytes on disk, named by their SHA-256, under a root several server nodes may share.

Layout: `<root>/sha256/<first two hex>/<sha256>` for stored files, `<root>/tmp/` for pushes in
progress and files being removed (the same file system, so every move is an atomic rename).

No rule here needs the database; the feed (packages/feed.py) orders the steps so that a file
exists whenever a committed row names it:
- a push writes a temporary file, hashing as it goes, fsyncs it, hard-links it into place
  (a link never replaces an existing file), commits its row, links again if the file vanished
  meanwhile, and only then drops its temporary name;
- a removal renames the file aside, asks the database again whether any row names it, and
  puts it back if one does (any file under a SHA-256 has the same bytes, whoever wrote it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import BinaryIO

_SHA256 = re.compile(r"[0-9a-f]{64}")
TEMP_SUFFIX = ".part"
RETIRED_SUFFIX = ".retired"


def is_sha256(text: str) -> bool:
    """Whether text is a lower-case hex SHA-256."""
    return bool(_SHA256.fullmatch(text))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Upload:
    """A file being received: written to a temporary name and hashed chunk by chunk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = path.open("xb")
        self._hash = hashlib.sha256()
        self.size = 0
        # A push cancelled mid-chunk discards from the event loop while a worker thread may
        # still be writing: the lock lets that write end before the file is closed.
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        """Append a chunk (blocking: call from a worker thread)."""
        with self._lock:
            if self._file is None:
                raise ValueError("the upload was discarded")
            self._file.write(data)
            self._hash.update(data)
            self.size += len(data)

    def finish(self) -> str:
        """Flush to disk and return the SHA-256 of everything written."""
        with self._lock:
            if self._file is None:
                raise ValueError("the upload was discarded")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            return self._hash.hexdigest()

    def discard(self) -> None:
        """Close and delete the temporary file (safe to call more than once)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            self.path.unlink(missing_ok=True)


class BlobStore:
    """Content-addressed package files under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files = root / "sha256"
        self._tmp = root / "tmp"

    def prepare(self) -> None:
        """Make the directories (owner-only: packages may hold secrets of their own)."""
        for path in (self.root, self._files, self._tmp):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path_of(self, sha256: str) -> Path:
        """Where the file with this SHA-256 lives (whether or not it exists)."""
        if not is_sha256(sha256):
            raise ValueError(f"{sha256!r} is not a SHA-256")
        return self._files / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        """Whether the file with this SHA-256 is stored."""
        return self.path_of(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        """Open the stored file for reading; FileNotFoundError when it is not stored."""
        return self.path_of(sha256).open("rb")

    def begin(self) -> Upload:
        """A new temporary file in the root's file system, for one push."""
        self._tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Upload(self._tmp / f"{uuid.uuid4().hex}{TEMP_SUFFIX}")

    def link(self, upload: Upload, sha256: str) -> bool:
        """Give the finished upload its content name unless it exists; True if we made it."""
        target = self.path_of(sha256)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        try:
            os.link(upload.path, target)
        except FileExistsError:
            return False
        _fsync_dir(target.parent)
        return True

    def retire(self, sha256: str) -> Path | None:
        """Move the file aside before removing it; None when it is not there."""
        aside = self._tmp / f"{sha256}.{uuid.uuid4().hex}{RETIRED_SUFFIX}"
        try:
            os.rename(self.path_of(sha256), aside)
        except FileNotFoundError:
            return None
        return aside

    def restore(self, aside: Path, sha256: str) -> None:
        """Put a retired file back: a row names it after all."""
        target = self.path_of(sha256)
        # FileExistsError: someone stored the same bytes again meanwhile.
        with contextlib.suppress(FileExistsError):
            os.link(aside, target)
        aside.unlink(missing_ok=True)
        _fsync_dir(target.parent)

    def sweep(self, older_than_seconds: float) -> int:
        """Clear what a crashed node left in tmp/; the count of files handled.

        A push's temporary file is deleted. A file retired by a removal that never finished
        is put back: the database may still name it, and a stray stored file only costs space.
        """
        if not self._tmp.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        handled = 0
        for path in self._tmp.iterdir():
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
                sha256 = path.name.split(".", 1)[0]
                if path.name.endswith(RETIRED_SUFFIX) and is_sha256(sha256):
                    self.restore(path, sha256)
                else:
                    path.unlink()
                handled += 1
            except FileNotFoundError:
                continue
        return handled
