"""Cancels the server could not deliver to an away agent, kept until it is back.

Several server nodes may deliver them: a node claims a due record by moving its next attempt
with a conditional update (the row count says who won), so two nodes do not try the same record
at once; a crashed node's claim simply falls due again.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cuttle.server.store.machines import name_key
from cuttle.server.store.models import Machine, PendingCancel
from cuttle.server.store.records import now_ms


@dataclass(frozen=True, slots=True)
class PendingCancelRecord:
    """A cancel waiting for its machine: which script, why, and how delivery has gone."""

    ticket: str
    machine_name: str
    task_id: str
    reason: str
    recorded_ms: int
    attempts: int
    last_attempt_ms: int | None
    last_error: str
    next_attempt_ms: int


def _record(row: PendingCancel) -> PendingCancelRecord:
    return PendingCancelRecord(
        ticket=row.ticket,
        machine_name=row.machine_name,
        task_id=row.task_id,
        reason=row.reason,
        recorded_ms=row.recorded_ms,
        attempts=row.attempts,
        last_attempt_ms=row.last_attempt_ms,
        last_error=row.last_error,
        next_attempt_ms=row.next_attempt_ms,
    )


def _rowcount(result: Any) -> int:
    count = result.rowcount
    if not isinstance(count, int):
        raise TypeError(f"expected an integer row count, got {count!r}")
    return count


def add(
    session: Session,
    *,
    ticket: str,
    machine_name: str,
    task_id: str,
    reason: str,
    next_attempt_ms: int,
    at_ms: int | None = None,
) -> PendingCancelRecord | None:
    """Keep a cancel for delivery; None when the machine is no longer registered.

    Adding the same ticket again returns the record already kept.
    """
    machine_id = session.scalar(
        select(Machine.id).where(Machine.name_key == name_key(machine_name))
    )
    if machine_id is None:
        # Nothing can reach a removed machine, and its removal would drop the record anyway.
        return None
    existing = session.get(PendingCancel, ticket, populate_existing=True)
    if existing is not None:
        return _record(existing)
    row = PendingCancel(
        ticket=ticket,
        machine_id=machine_id,
        machine_name=machine_name,
        task_id=task_id,
        reason=reason,
        recorded_ms=now_ms() if at_ms is None else at_ms,
        attempts=0,
        last_attempt_ms=None,
        last_error="",
        next_attempt_ms=next_attempt_ms,
    )
    session.add(row)
    session.flush()
    return _record(row)


def list_pending(
    session: Session, *, task_id: str | None = None, machine_name: str | None = None
) -> list[PendingCancelRecord]:
    """Every pending cancel (optionally of one task or one machine), oldest first."""
    query = select(PendingCancel)
    if task_id is not None:
        query = query.where(PendingCancel.task_id == task_id)
    if machine_name is not None:
        query = query.join(Machine, Machine.id == PendingCancel.machine_id).where(
            Machine.name_key == name_key(machine_name)
        )
    rows = session.scalars(query.order_by(PendingCancel.recorded_ms, PendingCancel.ticket))
    return [_record(row) for row in rows]


def count(session: Session) -> int:
    """How many cancels are pending."""
    return int(session.scalar(select(func.count()).select_from(PendingCancel)) or 0)


def due(
    session: Session, *, at_ms: int, limit: int, exclude: Collection[str] = ()
) -> list[PendingCancelRecord]:
    """The records whose next attempt is due at at_ms, soonest first, without the excluded."""
    query = select(PendingCancel).where(PendingCancel.next_attempt_ms <= at_ms)
    if exclude:
        query = query.where(PendingCancel.ticket.not_in(sorted(exclude)))
    rows = session.scalars(
        query.order_by(PendingCancel.next_attempt_ms, PendingCancel.ticket).limit(limit)
    )
    return [_record(row) for row in rows]


def next_due_ms(session: Session, *, exclude: Collection[str] = ()) -> int | None:
    """When the soonest record (not excluded) falls due; None when none is pending."""
    query = select(func.min(PendingCancel.next_attempt_ms))
    if exclude:
        query = query.where(PendingCancel.ticket.not_in(sorted(exclude)))
    value = session.scalar(query)
    return None if value is None else int(value)


def claim(
    session: Session,
    ticket: str,
    *,
    expected_next_ms: int,
    next_attempt_ms: int,
    at_ms: int | None = None,
) -> PendingCancelRecord | None:
    """Count an attempt starting now and schedule the next (as if this one fails).

    Only if the record is still due as read (expected_next_ms): None when another node claimed
    it first, or it was delivered or dropped meanwhile.
    """
    at = now_ms() if at_ms is None else at_ms
    result = session.execute(
        update(PendingCancel)
        .where(
            PendingCancel.ticket == ticket,
            PendingCancel.next_attempt_ms == expected_next_ms,
        )
        .values(
            attempts=PendingCancel.attempts + 1,
            last_attempt_ms=at,
            next_attempt_ms=next_attempt_ms,
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) == 0:
        return None
    row = session.get(PendingCancel, ticket, populate_existing=True)
    return None if row is None else _record(row)


def postpone(session: Session, ticket: str, *, next_attempt_ms: int, error: str) -> bool:
    """Say why delivery failed and when to try next; False when the record is gone."""
    result = session.execute(
        update(PendingCancel)
        .where(PendingCancel.ticket == ticket)
        .values(next_attempt_ms=next_attempt_ms, last_error=error)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) > 0


def remove(session: Session, ticket: str) -> PendingCancelRecord | None:
    """Forget a delivered (or undeliverable) cancel; returns it, or None if it was gone already.

    The row count tells a node whether it, and not another node, finished the record.
    """
    row = session.get(PendingCancel, ticket, populate_existing=True)
    if row is None:
        return None
    record = _record(row)
    result = session.execute(
        delete(PendingCancel)
        .where(PendingCancel.ticket == ticket)
        .execution_options(synchronize_session=False)
    )
    return record if _rowcount(result) else None
