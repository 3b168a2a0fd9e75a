"""Errors raised by the Tentacle's script execution engine.

::

    ExecutionError            root: anything the engine refuses or cannot do
    ├── UnknownTicket         no such ticket (never started, or already completed)
    └── InvalidScript         the request itself is wrong: bad ticket, file name or syntax
        (ValueError)

A script that fails to *run* (missing interpreter, mutex timeout) is not an exception: it is a
ticket in state FAILED_TO_START with a reason, so the server learns it through the usual status.
"""

from __future__ import annotations

__all__ = ["ExecutionError", "InvalidScript", "UnknownTicket"]


class ExecutionError(Exception):
    """Root of every error the execution engine raises."""


class UnknownTicket(ExecutionError, KeyError):
    """The ticket was never started here, or was already completed."""

    def __str__(self) -> str:
        # KeyError quotes its argument; the message reads better plain.
        return str(self.args[0]) if self.args else "unknown ticket"


class InvalidScript(ExecutionError, ValueError):
    """The start request is malformed: bad ticket name, escaping file name, unknown syntax."""
