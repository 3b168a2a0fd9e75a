"""The audit trail: every change to the model is an event, listed newest first and filtered."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cuttle.server.store.models import Event
from cuttle.server.store.paging import check_page_size, newest_first, next_token
from cuttle.server.store.records import Page, now_ms

MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One audited change."""

    id: str
    space_id: str
    occurred_ms: int
    actor: str
    category: str
    kind: str
    document_id: str | None
    document_name: str
    message: str
    details: dict[str, Any]


def _record(row: Event) -> EventRecord:
    return EventRecord(
        id=row.id,
        space_id=row.space_id,
        occurred_ms=row.occurred_ms,
        actor=row.actor,
        category=row.category,
        kind=row.kind,
        document_id=row.document_id,
        document_name=row.document_name,
        message=row.message,
        details=dict(row.details),
    )


def record(
    session: Session,
    *,
    space_id: str,
    actor: str,
    category: str,
    kind: str,
    document_id: str | None,
    document_name: str,
    message: str,
    details: dict[str, Any],
) -> EventRecord:
    """Append an event in the caller's transaction, so it exists exactly when the change does."""
    row = Event(
        id=uuid.uuid4().hex,
        space_id=space_id,
        occurred_ms=now_ms(),
        actor=actor,
        category=category,
        kind=kind,
        document_id=document_id,
        document_name=document_name,
        message=message,
        details=details,
    )
    session.add(row)
    session.flush()
    return _record(row)


def list_page(
    session: Session,
    space_id: str,
    *,
    kind: str = "",
    document_name: str = "",
    actor: str = "",
    category: str = "",
    since_ms: int = 0,
    page_size: int = 100,
    page_token: str | None = None,
) -> Page[EventRecord]:
    """Events newest first, filtered by kind, document name, actor, category and time."""
    check_page_size(page_size, MAX_PAGE_SIZE)
    query = select(Event).where(Event.space_id == space_id)
    if kind:
        query = query.where(Event.kind == kind)
    if document_name:
        query = query.where(Event.document_name == document_name)
    if actor:
        query = query.where(Event.actor == actor)
    if category:
        query = query.where(Event.category == category)
    if since_ms:
        query = query.where(Event.occurred_ms >= since_ms)
    query = newest_first(query, Event.occurred_ms, Event.id, page_token, page_size)
    rows = session.scalars(query).all()
    items = tuple(_record(row) for row in rows[:page_size])
    more = len(rows) > page_size
    token = next_token(items[-1].occurred_ms, items[-1].id, more) if items else None
    return Page(items=items, next_page_token=token)
