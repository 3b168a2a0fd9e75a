"""Interruptions as stored: opened by the engine, answered once by a person, read by both.

An answer is a conditional update (only while unanswered) whose row count is checked, so two
people answering at once, or two server nodes, can never both win.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cuttle.server.domain.interruptions import InterruptionKind, Response
from cuttle.server.store.errors import Conflict, InvalidArgument, NotFound
from cuttle.server.store.models import Interruption
from cuttle.server.store.records import now_ms


@dataclass(frozen=True, slots=True)
class InterruptionRecord:
    """An interruption and, once given, its answer."""

    id: str
    task_id: str
    node_id: str
    kind: InterruptionKind
    step: str
    action: str
    machine: str
    title: str
    instructions: str
    responsible_teams: tuple[str, ...]
    responses: tuple[Response, ...]
    created_ms: int
    response: Response | None
    answered_by: str
    answered_ms: int | None
    note: str

    @property
    def is_open(self) -> bool:
        """Whether it still waits for an answer."""
        return self.response is None


def _record(row: Interruption) -> InterruptionRecord:
    return InterruptionRecord(
        id=row.id,
        task_id=row.task_id,
        node_id=row.node_id,
        kind=InterruptionKind(row.kind),
        step=row.step,
        action=row.action,
        machine=row.machine,
        title=row.title,
        instructions=row.instructions,
        responsible_teams=tuple(row.responsible_teams),
        responses=tuple(Response(r) for r in row.responses),
        created_ms=row.created_ms,
        response=Response(row.response) if row.response else None,
        answered_by=row.answered_by,
        answered_ms=row.answered_ms,
        note=row.note,
    )


def open_interruption(
    session: Session,
    *,
    task_id: str,
    node_id: str,
    kind: InterruptionKind,
    step: str,
    action: str,
    machine: str,
    title: str,
    responses: Sequence[Response],
    instructions: str = "",
    responsible_teams: Sequence[str] = (),
) -> InterruptionRecord:
    """Open an interruption; the engine waits until it is answered."""
    row = Interruption(
        id=uuid.uuid4().hex,
        task_id=task_id,
        node_id=node_id,
        kind=kind.value,
        step=step,
        action=action,
        machine=machine,
        title=title,
        instructions=instructions,
        responsible_teams=list(responsible_teams),
        responses=[r.value for r in responses],
        created_ms=now_ms(),
        response="",
        answered_by="",
        answered_ms=None,
        note="",
    )
    session.add(row)
    session.flush()
    return _record(row)


def get(session: Session, interruption_id: str) -> InterruptionRecord:
    """The interruption with this id, or NotFound."""
    row = session.get(Interruption, interruption_id, populate_existing=True)
    if row is None:
        raise NotFound("interruption", interruption_id)
    return _record(row)


def list_for(
    session: Session, *, task_id: str | None = None, open_only: bool = False
) -> list[InterruptionRecord]:
    """Interruptions, oldest first: of one task, or of all; optionally only the open ones."""
    query = select(Interruption).order_by(Interruption.created_ms, Interruption.id)
    if task_id is not None:
        query = query.where(Interruption.task_id == task_id)
    if open_only:
        query = query.where(Interruption.response == "")
    return [_record(row) for row in session.scalars(query)]


def open_for_node(session: Session, node_id: str) -> InterruptionRecord | None:
    """The node's interruption still waiting for an answer, if any (after a restart)."""
    row = session.scalars(
        select(Interruption).where(Interruption.node_id == node_id, Interruption.response == "")
    ).first()
    return None if row is None else _record(row)


def count_for_node(session: Session, node_id: str, response: Response) -> int:
    """How many of the node's interruptions were answered with response (retries so far)."""
    return len(
        session.scalars(
            select(Interruption.id).where(
                Interruption.node_id == node_id, Interruption.response == response.value
            )
        ).all()
    )


def answer(
    session: Session, interruption_id: str, response: Response, *, by: str, note: str
) -> InterruptionRecord:
    """Record the answer; only one answer ever wins, and only one the interruption offers."""
    current = get(session, interruption_id)
    if response not in current.responses:
        offered = ", ".join(r.value for r in current.responses)
        raise InvalidArgument(
            f"interruption {interruption_id} offers {offered}, not {response.value}"
        )
    values: dict[str, Any] = {
        "response": response.value,
        "answered_by": by,
        "answered_ms": now_ms(),
        "note": note,
    }
    result = session.execute(
        update(Interruption)
        .where(Interruption.id == interruption_id, Interruption.response == "")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        answered = get(session, interruption_id)
        raise Conflict(
            f"interruption {interruption_id} was already answered "
            f"({answered.response.value if answered.response else '?'} by {answered.answered_by})"
        )
    return get(session, interruption_id)
