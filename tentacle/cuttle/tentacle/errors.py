"""Errors the Tentacle reports to the server, each with the wire kind of cuttle.protocol.errors.

TentacleError (kind=internal)
├── BadRequest (invalid_argument)   malformed request: bad ticket, bad path, wrong offset
└── NotFound (not_found)            unknown ticket, transfer or file
"""

from __future__ import annotations


class TentacleError(Exception):
    """Root of the Tentacle's errors; `kind` names the wire error kind."""

    kind = "internal"


class BadRequest(TentacleError):
    """The request was malformed; nothing was done."""

    kind = "invalid_argument"


class NotFound(TentacleError):
    """The ticket, transfer or file does not exist."""

    kind = "not_found"
