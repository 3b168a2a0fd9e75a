"""What a Tentacle answers about its package cache and a package transfer (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PackageLookup:
    """The package is cached; or else the cached version a delta can be built against."""

    cached: bool
    basis_sha256: str = ""
    basis_version: str = ""
    basis_size: int = 0
    signature_size: int = 0


@dataclass(frozen=True, slots=True)
class TransferBegin:
    """What the server announces before sending a package, full or as a delta."""

    sha256: str
    package_id: str
    version: str
    size: int
    transfer_size: int
    basis_sha256: str = ""
    block_size: int = 0


@dataclass(frozen=True, slots=True)
class TransferState:
    """Where a transfer stands on the Tentacle: the next chunk it wants, why it refused one."""

    transfer_id: str
    next_chunk: int
    received_bytes: int
    rejected: str = ""
