"""The server's errors; each carries the wire kind of cuttle.protocol.errors.

ServerError (internal)
├── NotFound (not_found)
├── Conflict (conflict)
├── FailedPrecondition (failed_precondition)
├── InvalidArgument (invalid_argument)
├── PermissionDenied (permission_denied)
├── Unauthenticated (unauthenticated)
└── AgentError                      talking to a Tentacle went wrong
    ├── NotDelivered (not_delivered)  never reached the agent: safe_to_retry is True
    ├── Unreachable (unreachable)     refused, timed out, stream lost; `reason` says which
    ├── Untrusted (untrusted)         the agent's certificate is not the pinned one
    ├── UnknownTicket (not_found)     the agent has no script under the ticket
    └── AgentRejected (agent's kind)  the agent answered with an error

"No such machine" is NotFound, raised by the server itself; the agent saying it does not know
a ticket is UnknownTicket, an AgentError: the two must never be confused (a removed machine is
not a script that ended).
"""

from __future__ import annotations


class ServerError(Exception):
    """Root of the server's errors."""

    kind = "internal"


class NotFound(ServerError):
    """The named thing does not exist."""

    kind = "not_found"


class Conflict(ServerError):
    """It exists already, or its state forbids the change."""

    kind = "conflict"


class FailedPrecondition(ServerError):
    """Its current state forbids the change: in use by something, or changed since read."""

    kind = "failed_precondition"


class InvalidArgument(ServerError):
    """The request is malformed; nothing was changed."""

    kind = "invalid_argument"


class PermissionDenied(ServerError):
    """The caller may not do this."""

    kind = "permission_denied"


class Unauthenticated(ServerError):
    """No valid API key or certificate."""

    kind = "unauthenticated"


class AgentError(ServerError):
    """A request to a Tentacle failed."""

    kind = "unreachable"
    safe_to_retry = False


class NotDelivered(AgentError):
    """The request was never picked up by the agent; sending it again is safe."""

    kind = "not_delivered"
    safe_to_retry = True


class Unreachable(AgentError):
    """The agent could not be reached or the connection was lost mid-request."""

    kind = "unreachable"

    def __init__(self, machine: str, reason: str, detail: str = "") -> None:
        self.machine = machine
        self.reason = reason
        super().__init__(f"{machine} is unreachable: {reason}" + (f" ({detail})" if detail else ""))


class Untrusted(Unreachable):
    """The agent presented a certificate other than the pinned one (or refused ours)."""

    kind = "untrusted"


class UnknownTicket(AgentError):
    """The agent answered that it has no script under the ticket (never had, or forgot it)."""

    kind = "not_found"

    def __init__(self, machine: str, message: str) -> None:
        self.machine = machine
        super().__init__(f"{machine}: {message}")


class AgentRejected(AgentError):
    """The agent answered with an error of its own."""

    def __init__(self, machine: str, kind: str, message: str) -> None:
        self.kind = kind
        self.machine = machine
        super().__init__(f"{machine}: {message}")


class ValidationFailed(InvalidArgument):
    """Several fields are wrong; each violation is (field path, message). Nothing was changed."""

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        self.violations = violations
        shown = "; ".join(
            f"{field}: {message}" if field else message for field, message in violations[:5]
        )
        more = f" (and {len(violations) - 5} more)" if len(violations) > 5 else ""
        super().__init__(f"{shown}{more}")
