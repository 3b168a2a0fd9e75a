"""The audit trail: every change to the model is an event, listed newest first and filtered."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cuttle.server.domain.audit import CATEGORIES
from cuttle.server.store.models import Event
from cuttle.server.store.paging import check_page_size, newest_first, next_token
from cuttle.server.store.records import Page, now_ms

MAX_PAGE_SIZE = 1000


_id_lock = threading.Lock()
_last_id_stamp = (0, 0)


def ordered_event_id(occurred_ms: int) -> str:
    """An id that sorts after every id this process made before (32 hex characters).

    Events are listed by (occurred_ms, id), newest first: events written in the same
    millisecond (one apply deleting several documents) must keep the order they happened in,
    which random ids would shuffle. Millisecond, a sequence within it, then random bits so that
    two server nodes never collide.
    """
    global _last_id_stamp
    with _id_lock:
        last_ms, sequence = _last_id_stamp
        # In the same millisecond, or after the clock stepped back: keep counting up.
        stamp = (occurred_ms, 0) if occurred_ms > last_ms else (last_ms, sequence + 1)
        _last_id_stamp = stamp
    return f"{stamp[0]:012x}{stamp[1]:06x}{secrets.token_hex(7)}"


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
    if category not in CATEGORIES:
        raise ValueError(f"event category {category!r} is not one of domain.audit.CATEGORIES")
    occurred_ms = now_ms()
    row = Event(
        id=ordered_event_id(occurred_ms),
        space_id=space_id,
        occurred_ms=occurred_ms,
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
