"""Spaces and the documents of the model, stored as JSON bodies with indexed names and references.

This layer knows nothing of schemas: bodies are plain JSON, references are (path, target id)
pairs computed by the caller. It enforces what the database can: unique names per kind and
space, optimistic concurrency by revision, and that nothing still referenced is deleted.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from cuttle.server.store.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound
from cuttle.server.store.models import Document, DocumentReference, Release, Space
from cuttle.server.store.records import Page, now_ms

DEFAULT_SPACE = "Default"
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class SpaceRecord:
    """A space."""

    id: str
    name: str
    created_ms: int = 0

    @property
    def is_default(self) -> bool:
        """Whether this is the default space (it keeps its name, so the name tells)."""
        return name_key(self.name) == name_key(DEFAULT_SPACE)


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """A stored document: body as JSON, references by id."""

    id: str
    space_id: str
    kind: str
    name: str
    sort_order: int
    body: dict[str, Any]
    revision: int
    created_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class Referrer:
    """A document that refers to another one, and where."""

    id: str
    kind: str
    name: str
    path: str


def name_key(name: str) -> str:
    """The case-insensitive key under which a name is unique."""
    return name.casefold()


def _record(row: Document) -> DocumentRecord:
    return DocumentRecord(
        id=row.id,
        space_id=row.space_id,
        kind=row.kind,
        name=row.name,
        sort_order=row.sort_order,
        body=dict(row.body),
        revision=row.revision,
        created_ms=row.created_ms,
        updated_ms=row.updated_ms,
    )


def ensure_space(session: Session, name: str = DEFAULT_SPACE) -> tuple[SpaceRecord, bool]:
    """Return the space called name, creating it if needed; the flag says whether it was new."""
    row = session.scalars(select(Space).where(Space.name_key == name_key(name))).first()
    if row is not None:
        return _space_record(row), False
    return create_space(session, name), True


def get_space(session: Session, name: str, *, for_update: bool = False) -> SpaceRecord:
    """The space called name, or NotFound; for_update also holds off new documents in it."""
    return _space_record(_space_row(session, name, for_update=for_update))


def _space_record(row: Space) -> SpaceRecord:
    return SpaceRecord(row.id, row.name, row.created_ms)


def _space_row(session: Session, name: str, *, for_update: bool = False) -> Space:
    query = select(Space).where(Space.name_key == name_key(name))
    row = session.scalars(query.with_for_update() if for_update else query).first()
    if row is None:
        raise NotFound("space", name)
    return row


def list_spaces(session: Session) -> list[SpaceRecord]:
    """Every space, by name."""
    rows = session.scalars(select(Space).order_by(Space.name_key)).all()
    return [_space_record(row) for row in rows]


def create_space(session: Session, name: str) -> SpaceRecord:
    """A new, empty space; Conflict when the name (in any case) is taken."""
    if session.scalars(select(Space.id).where(Space.name_key == name_key(name))).first():
        raise Conflict(f"a space named {name!r} already exists")
    row = Space(id=uuid.uuid4().hex, name=name, name_key=name_key(name), created_ms=now_ms())
    session.add(row)
    session.flush()
    return _space_record(row)


def rename_space(session: Session, name: str, new_name: str) -> SpaceRecord:
    """Rename a space; Conflict when another space has the new name."""
    row = _space_row(session, name, for_update=True)
    if (
        name_key(new_name) != row.name_key
        and session.scalars(select(Space.id).where(Space.name_key == name_key(new_name))).first()
    ):
        raise Conflict(f"a space named {new_name!r} already exists")
    row.name = new_name
    row.name_key = name_key(new_name)
    session.flush()
    return _space_record(row)


def space_contents(
    session: Session, space_id: str, ignore: Collection[tuple[str, str]] = ()
) -> dict[str, int]:
    """How many documents of each kind (and releases) a space holds, except ignored (kind, name)."""
    skip = {(kind, name_key(name)) for kind, name in ignore}
    counts: dict[str, int] = {}
    for kind, key in session.execute(
        select(Document.kind, Document.name_key).where(Document.space_id == space_id)
    ).all():
        if (kind, key) not in skip:
            counts[kind] = counts.get(kind, 0) + 1
    releases = session.scalar(
        select(func.count()).select_from(Release).where(Release.space_id == space_id)
    )
    if releases:
        counts["release"] = releases
    return counts


def delete_space(session: Session, space_id: str) -> None:
    """Delete a space and everything in it (the caller checks it is empty enough)."""
    in_space = select(Document.id).where(Document.space_id == space_id)
    # References are RESTRICT so a lone delete can never orphan one; here the whole space
    # goes, so they go first. Releases (and their deployments, snapshots) cascade.
    session.execute(delete(DocumentReference).where(DocumentReference.from_id.in_(in_space)))
    session.execute(delete(Release).where(Release.space_id == space_id))
    session.execute(delete(Document).where(Document.space_id == space_id))
    session.execute(delete(Space).where(Space.id == space_id))
    session.flush()


def has_documents(session: Session) -> bool:
    """Whether any document exists in any space."""
    return session.scalar(select(Document.id).limit(1)) is not None


def get(session: Session, document_id: str) -> DocumentRecord:
    """The document with this id, or NotFound."""
    row = session.get(Document, document_id)
    if row is None:
        raise NotFound("document", document_id)
    return _record(row)


def find(session: Session, space_id: str, kind: str, name: str) -> DocumentRecord | None:
    """The document of a kind called name (any case), or None."""
    row = session.scalars(
        select(Document).where(
            Document.space_id == space_id,
            Document.kind == kind,
            Document.name_key == name_key(name),
        )
    ).first()
    return None if row is None else _record(row)


def all_of_kind(session: Session, space_id: str, kind: str) -> list[DocumentRecord]:
    """Every document of a kind, in sort order then name."""
    rows = session.scalars(
        select(Document)
        .where(Document.space_id == space_id, Document.kind == kind)
        .order_by(Document.sort_order, Document.name_key)
    ).all()
    return [_record(row) for row in rows]


def ids_by_name(
    session: Session, space_id: str, kind: str, names: Collection[str]
) -> dict[str, str]:
    """Map each existing name's key to its document id."""
    if not names:
        return {}
    keys = {name_key(n) for n in names}
    rows = session.execute(
        select(Document.name_key, Document.id).where(
            Document.space_id == space_id, Document.kind == kind, Document.name_key.in_(keys)
        )
    ).all()
    return {key: doc_id for key, doc_id in rows}


def names_by_id(session: Session, ids: Collection[str]) -> dict[str, tuple[str, str]]:
    """Map each existing id to (kind, name)."""
    if not ids:
        return {}
    rows = session.execute(
        select(Document.id, Document.kind, Document.name).where(Document.id.in_(set(ids)))
    ).all()
    return {doc_id: (kind, name) for doc_id, kind, name in rows}


def next_sort_order(session: Session, space_id: str, kind: str) -> int:
    """The sort order that puts a new document after every existing one of its kind."""
    current = session.scalar(
        select(func.max(Document.sort_order)).where(
            Document.space_id == space_id, Document.kind == kind
        )
    )
    return 0 if current is None else current + 1


def insert_document(
    session: Session,
    *,
    space_id: str,
    kind: str,
    name: str,
    body: dict[str, Any],
    references: Iterable[tuple[str, str]] | None,
    document_id: str | None = None,
    sort_order: int | None = None,
) -> DocumentRecord:
    """Store a new document; Conflict when its name is taken."""
    if find(session, space_id, kind, name) is not None:
        raise Conflict(f"a {kind.replace('_', ' ')} named {name!r} already exists")
    now = now_ms()
    row = Document(
        id=document_id or uuid.uuid4().hex,
        space_id=space_id,
        kind=kind,
        name=name,
        name_key=name_key(name),
        sort_order=next_sort_order(session, space_id, kind) if sort_order is None else sort_order,
        body=body,
        revision=1,
        created_ms=now,
        updated_ms=now,
    )
    session.add(row)
    session.flush()
    if references is not None:
        set_references(session, row.id, references)
    return _record(row)


def replace(
    session: Session,
    document_id: str,
    *,
    name: str,
    body: dict[str, Any],
    references: Iterable[tuple[str, str]] | None,
    expected_revision: int | None = None,
) -> DocumentRecord:
    """Replace a document's name and body; FailedPrecondition when it changed since read."""
    row = session.get(Document, document_id, with_for_update=True)
    if row is None:
        raise NotFound("document", document_id)
    if expected_revision is not None and row.revision != expected_revision:
        raise FailedPrecondition(
            f"{row.kind.replace('_', ' ')} {row.name!r} was changed by someone else "
            f"(revision {row.revision}, you read {expected_revision}); read it again and retry"
        )
    if name_key(name) != row.name_key:
        other = find(session, row.space_id, row.kind, name)
        if other is not None:
            raise Conflict(f"a {row.kind.replace('_', ' ')} named {name!r} already exists")
    row.name = name
    row.name_key = name_key(name)
    row.body = body
    row.revision += 1
    row.updated_ms = now_ms()
    session.flush()
    if references is not None:
        set_references(session, row.id, references)
    return _record(row)


def set_sort_orders(session: Session, ordered_ids: Sequence[str]) -> None:
    """Give documents the sort orders 0..n-1 in the order given."""
    for position, document_id in enumerate(ordered_ids):
        session.execute(
            update(Document).where(Document.id == document_id).values(sort_order=position)
        )


def referrers(session: Session, document_id: str) -> list[Referrer]:
    """Documents that refer to this one, with where."""
    rows = session.execute(
        select(Document.id, Document.kind, Document.name, DocumentReference.path)
        .join(DocumentReference, DocumentReference.from_id == Document.id)
        .where(DocumentReference.to_id == document_id, Document.id != document_id)
        .order_by(Document.kind, Document.name_key, DocumentReference.path)
    ).all()
    return [Referrer(*row) for row in rows]


def remove(session: Session, document_id: str) -> DocumentRecord:
    """Delete a document; FailedPrecondition naming its users while anything refers to it."""
    row = session.get(Document, document_id, with_for_update=True)
    if row is None:
        raise NotFound("document", document_id)
    users = referrers(session, document_id)
    if users:
        shown = "; ".join(f"{u.kind.replace('_', ' ')} {u.name!r} at {u.path}" for u in users[:10])
        more = f" and {len(users) - 10} more" if len(users) > 10 else ""
        raise FailedPrecondition(
            f"{row.kind.replace('_', ' ')} {row.name!r} is still used by: {shown}{more}"
        )
    record = _record(row)
    session.delete(row)
    session.flush()
    return record


def list_page(
    session: Session,
    space_id: str,
    kind: str,
    *,
    name_contains: str = "",
    page_size: int = 100,
    page_token: str | None = None,
) -> Page[DocumentRecord]:
    """One page of a kind's documents in sort order, optionally filtered by a name fragment."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page size must be 1-{MAX_PAGE_SIZE}")
    query = select(Document).where(Document.space_id == space_id, Document.kind == kind)
    if name_contains:
        query = query.where(Document.name_key.contains(name_key(name_contains), autoescape=True))
    if page_token:
        order_text, _, last_key = page_token.partition(":")
        if not order_text.lstrip("-").isdigit() or not last_key:
            raise InvalidArgument(f"page token {page_token!r} is not one this server gave")
        order = int(order_text)
        query = query.where(
            (Document.sort_order > order)
            | ((Document.sort_order == order) & (Document.name_key > last_key))
        )
    rows = session.scalars(
        query.order_by(Document.sort_order, Document.name_key).limit(page_size + 1)
    ).all()
    items = tuple(_record(row) for row in rows[:page_size])
    next_token = (
        f"{items[-1].sort_order}:{name_key(items[-1].name)}" if len(rows) > page_size else None
    )
    return Page(items=items, next_page_token=next_token)


def set_references(
    session: Session, document_id: str, references: Iterable[tuple[str, str]]
) -> None:
    """Replace what a document refers to (None above: leave it for the caller to set later)."""
    session.execute(delete(DocumentReference).where(DocumentReference.from_id == document_id))
    rows = [{"from_id": document_id, "path": path, "to_id": to} for path, to in references]
    if rows:
        session.execute(insert(DocumentReference), rows)


def get_space_by_id(session: Session, space_id: str) -> SpaceRecord:
    """The space with this id, or NotFound."""
    row = session.get(Space, space_id)
    if row is None:
        raise NotFound("space", space_id)
    return _space_record(row)
