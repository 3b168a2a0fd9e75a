"""Files coming in from the server in chunks, verified by SHA-256 before anything uses them."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import BinaryIO

from cuttle.tentacle.errors import BadRequest, NotFound

_TRANSFER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UploadStore:
    """Chunked uploads under `<home>/uploads`: `<id>.part` while arriving, `<id>` once verified."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, transfer_id: str, suffix: str = "") -> Path:
        if not _TRANSFER_ID.match(transfer_id):
            raise BadRequest(f"invalid transfer id {transfer_id!r}")
        return self.root / (transfer_id + suffix)

    def write_chunk(self, transfer_id: str, offset: int, data: bytes) -> int:
        """Append a chunk at `offset`; a repeated chunk is accepted once. Returns bytes held."""
        part = self._path(transfer_id, ".part")
        size = part.stat().st_size if part.exists() else 0
        if offset + len(data) <= size:
            return size  # a retried chunk we already hold
        if offset != size:
            raise BadRequest(
                f"transfer {transfer_id}: chunk at offset {offset}, expected offset {size}"
            )
        with part.open("ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return size + len(data)

    def commit(self, transfer_id: str, size: int, sha256: str) -> str:
        """Verify size and hash of a finished upload and make it usable; returns the hash."""
        part = self._path(transfer_id, ".part")
        final = self._path(transfer_id)
        if not part.exists():
            if final.exists():
                return _sha256_file(final)
            raise NotFound(f"no upload in progress with id {transfer_id}")
        actual_size = part.stat().st_size
        digest = _sha256_file(part)
        if actual_size != size or digest.lower() != sha256.lower():
            part.unlink()
            raise BadRequest(
                f"transfer {transfer_id} is corrupt: got {actual_size} bytes sha256 {digest}, "
                f"expected {size} bytes sha256 {sha256}; send it again"
            )
        os.replace(part, final)
        return digest

    def read(self, transfer_id: str) -> bytes:
        """The content of a committed upload."""
        final = self._path(transfer_id)
        if not final.exists():
            raise NotFound(f"no committed upload with id {transfer_id}")
        return final.read_bytes()

    def discard(self, transfer_id: str) -> None:
        """Remove an upload once a script has taken its content."""
        for suffix in ("", ".part"):
            self._path(transfer_id, suffix).unlink(missing_ok=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def read_open_chunk(
    handle: BinaryIO, name: str, offset: int, length: int
) -> tuple[bytes, int, str]:
    """Read one chunk of an open file: (data, total size, sha256 of the whole file at EOF)."""
    total = os.fstat(handle.fileno()).st_size
    if offset > total:
        raise BadRequest(f"offset {offset} is past the end of {name} ({total} bytes)")
    handle.seek(offset)
    data = handle.read(length)
    if offset + len(data) < total:
        return data, total, ""
    handle.seek(0)
    digest = hashlib.sha256()
    while chunk := handle.read(1024 * 1024):
        digest.update(chunk)
    return data, total, digest.hexdigest()
