"""Errors raised by the store; callers translate them once, at the API edge.

StoreError            root: anything the store refuses or cannot find
├── NotFound          the named row does not exist
├── Conflict          the row exists already
├── FailedPrecondition its state forbids the change (still referenced, stale revision)
├── InvalidArgument   the value can never be stored (malformed thumbprint, unknown state)
├── StoreUnavailable  the database stayed locked or unreachable past the retry window
└── ServerDiskFull    the database could not write: no space left
"""

from __future__ import annotations


class StoreError(Exception):
    """Root of the store's errors."""


class NotFound(StoreError):
    """The named row does not exist."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} was not found")
        self.kind = kind
        self.key = key


class Conflict(StoreError):
    """The row exists already, or its current state forbids the change."""


class FailedPrecondition(StoreError):
    """The row's state forbids the change: still referenced, or changed since it was read."""


class InvalidArgument(StoreError):
    """A value that can never be stored; nothing was written."""


class StoreUnavailable(StoreError):
    """The database could not serve a transaction within the retry window (locked, gone)."""


class ServerDiskFull(StoreError):
    """The database could not write: the server's disk (or quota) is full."""
