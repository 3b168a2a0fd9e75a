"""Spaces in the store: created, listed, renamed, counted and deleted with what they hold."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.encryption import Encryptor
from cuttle.server.model import documents as d
from cuttle.server.model.kinds import kind
from cuttle.server.model.repository import ModelRepository
from cuttle.server.store import documents as store
from cuttle.server.store import events
from cuttle.server.store.errors import Conflict, NotFound
from cuttle.server.store.models import Document, DocumentReference

STARTING = (("lifecycle", "Default Lifecycle"), ("project_group", "Default Project Group"))


def _space(session: Session, name: str) -> ModelRepository:
    space = store.create_space(session, name)
    repo = ModelRepository(session, space, Encryptor(os.urandom(32)), actor="alice")
    repo.ensure_defaults()
    return repo


def test_spaces_are_created_listed_and_renamed_case_insensitively(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as s:
        default, _ = store.ensure_space(s)
        created = store.create_space(s, "Team-B")
        with pytest.raises(Conflict, match="space named 'team-b' already exists"):
            store.create_space(s, "team-b")
        assert [(x.name, x.is_default) for x in store.list_spaces(s)] == [
            ("Default", True),
            ("Team-B", False),
        ]
        assert store.get_space(s, "TEAM-b").id == created.id
        assert default.is_default
        with pytest.raises(Conflict, match="space named 'default' already exists"):
            store.rename_space(s, "Team-B", "default")
        renamed = store.rename_space(s, "team-b", "Ops")
        assert (renamed.id, renamed.name) == (created.id, "Ops")
        assert store.rename_space(s, "Ops", "OPS").name == "OPS"
        with pytest.raises(NotFound, match="space 'Team-B' was not found"):
            store.get_space(s, "Team-B")


def test_contents_ignore_what_a_space_starts_with_and_stay_per_space(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as s:
        a = _space(s, "A")
        b = _space(s, "B")
        assert store.space_contents(s, a.space.id, STARTING) == {}
        assert store.space_contents(s, a.space.id) == {"lifecycle": 1, "project_group": 1}
        a.create(kind("environment"), d.Environment(name="Dev"))
        a.create(kind("environment"), d.Environment(name="Prod"))
        b.create(kind("environment"), d.Environment(name="Dev"))
        assert store.space_contents(s, a.space.id, STARTING) == {"environment": 2}
        assert store.space_contents(s, b.space.id, STARTING) == {"environment": 1}


def test_deleting_a_space_takes_its_documents_and_references_but_not_others_or_events(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as s:
        a = _space(s, "A")
        b = _space(s, "B")
        for repo in (a, b):
            repo.create(kind("environment"), d.Environment(name="Dev"))
            phase = d.Phase(name="First", automatic_environments=["Dev"])
            repo.create(kind("lifecycle"), d.Lifecycle(name="Main", phases=[phase]))
        store.delete_space(s, a.space.id)
        with pytest.raises(NotFound):
            store.get_space(s, "A")
        assert s.scalar(select(func.count()).select_from(Document)) == 4
        assert s.scalar(select(func.count()).select_from(DocumentReference)) == 1
        assert store.find(s, b.space.id, "lifecycle", "Main") is not None
        # The audit trail outlives the space it describes.
        trail = events.list_page(s, a.space.id, page_size=100)
        assert "Created environment Dev" in [e.message for e in trail.items]
