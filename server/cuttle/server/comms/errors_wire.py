"""Translate what a transport saw into the server's typed agent errors, in one place."""

from __future__ import annotations

import grpc

from cuttle.protocol.errors import code_from_number, explicit_kind, kind_for_code
from cuttle.server.errors import AgentError, AgentRejected, UnknownTicket, Unreachable, Untrusted

_TLS_HINTS = ("handshake", "ssl", "certificate", "tls")


def from_rpc_error(machine: str, error: grpc.aio.AioRpcError) -> AgentError:
    """Map a failed gRPC call to a listening agent onto a typed error."""
    details = error.details() or ""
    lowered = details.lower()
    code = error.code()
    kind = explicit_kind(error)
    if kind is not None:
        return from_kind(machine, kind, details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unreachable(machine, "timed out", details)
    if code == grpc.StatusCode.UNAVAILABLE:
        if "refused" in lowered:
            return Unreachable(machine, "connection refused", details)
        if any(hint in lowered for hint in _TLS_HINTS):
            return Untrusted(machine, "untrusted certificate (TLS handshake failed)", details)
        if "socket closed" in lowered or "connection reset" in lowered:
            # The agent closed the TLS handshake: it does not trust our certificate.
            return Untrusted(machine, "the agent refused our certificate", details)
        if "timeout" in lowered or "timed out" in lowered:
            return Unreachable(machine, "timed out", details)
        return Unreachable(machine, "unavailable", details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Untrusted(machine, "the agent does not trust this server", details)
    return from_kind(machine, kind_for_code(code), details)


def from_kind(machine: str, kind: str, message: str) -> AgentError:
    """Map an error the agent reported (by kind) onto a typed error."""
    if kind == "not_found":
        # The only thing an agent can fail to find is a ticket (or a file under one).
        return UnknownTicket(machine, message)
    return AgentRejected(machine, kind, message)


def from_frame(machine: str, status_code: int, kind: str, message: str) -> AgentError:
    """Map an error Response frame from a polling agent onto a typed error."""
    return from_kind(machine, kind or kind_for_code(code_from_number(status_code)), message)
