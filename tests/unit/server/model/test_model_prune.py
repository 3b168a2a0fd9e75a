"""Apply with prune: what the files no longer declare goes, in the kinds they manage, or nothing."""

from __future__ import annotations

import os

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.encryption import Encryptor
from cuttle.server.errors import FailedPrecondition
from cuttle.server.model import documents as d
from cuttle.server.model.kinds import Kind, kind
from cuttle.server.model.repository import ModelRepository, StoredDocument
from cuttle.server.store import documents as store
from cuttle.server.store import events

ENV = kind("environment")
LIFECYCLE = kind("lifecycle")
PROJECT = kind("project")
PROJECT_GROUP = kind("project_group")
TEAM = kind("team")
TENANT = kind("tenant")

Items = list[tuple[Kind, d.Document]]


@pytest.fixture
def encryptor() -> Encryptor:
    return Encryptor(os.urandom(32))


def _repo(session: Session, encryptor: Encryptor) -> ModelRepository:
    space, _ = store.ensure_space(session)
    repo = ModelRepository(session, space, encryptor, actor="alice")
    repo.ensure_defaults()
    return repo


def _lifecycle(name: str, *environments: str) -> d.Lifecycle:
    return d.Lifecycle(
        name=name, phases=[d.Phase(name="Only", automatic_environments=list(environments))]
    )


def _apply_pruning(repo: ModelRepository, items: Items, *kinds: Kind) -> list[tuple[str, str]]:
    prune = repo.prune_candidates(items, kinds)
    changes = repo.apply(items, prune=prune)
    return [(c.action, f"{c.kind} {c.name}") for c in changes if c.action != "unchanged"]


def _names(session: Session, repo: ModelRepository, document_kind: Kind) -> list[str]:
    return [r.name for r in store.all_of_kind(session, repo.space.id, document_kind.name)]


def test_only_undeclared_documents_of_the_managed_kinds_are_deleted_and_audited(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        repo.apply([(ENV, d.Environment(name=n)) for n in ("Dev", "Test", "Old")])
        repo.create(TENANT, d.Tenant(name="Contoso"))
        items: Items = [(ENV, d.Environment(name="Dev")), (ENV, d.Environment(name="Test"))]
        assert _apply_pruning(repo, items, ENV) == [("delete", "environment Old")]
        assert _names(s, repo, ENV) == ["Dev", "Test"]
        # The files declare no tenants, so tenants are not theirs to prune.
        assert _names(s, repo, TENANT) == ["Contoso"]
        [deleted] = events.list_page(s, repo.space.id, category="deleted").items
    assert (deleted.kind, deleted.document_name, deleted.actor) == ("environment", "Old", "alice")
    assert deleted.details["before"]["name"] == "Old"
    assert deleted.details["after"] is None


def test_the_documents_every_space_starts_with_are_never_pruned(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        repo.create(LIFECYCLE, d.Lifecycle(name="Old"))
        repo.create(PROJECT_GROUP, d.ProjectGroup(name="Old group"))
        candidates = repo.prune_candidates([], [LIFECYCLE, PROJECT_GROUP])
        assert [(c.kind.name, c.spec.name) for c in candidates] == [
            ("project_group", "Old group"),
            ("lifecycle", "Old"),
        ]


def test_a_prune_that_would_leave_a_dangling_reference_is_refused_whole(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        repo.apply([(ENV, d.Environment(name=n)) for n in ("Dev", "Old", "Older")])
        repo.create(LIFECYCLE, _lifecycle("Main", "Old", "Older"))
    items: Items = [(ENV, d.Environment(name="Dev", description="changed"))]
    with pytest.raises(FailedPrecondition) as caught, sessions.begin() as s:
        _apply_pruning(_repo(s, encryptor), items, ENV)
    message = str(caught.value)
    assert message.startswith("cannot prune (nothing was applied): ")
    assert "environment 'Older' is still used by: lifecycle 'Main' at phases[0]" in message
    assert "environment 'Old' is still used by: lifecycle 'Main' at phases[0]" in message
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        assert _names(s, repo, ENV) == ["Dev", "Old", "Older"]
        dev = repo.get(ENV, "Dev").spec
        assert dev.description == ""
        assert events.list_page(s, repo.space.id, category="deleted").items == ()


def test_a_reference_dropped_or_pruned_in_the_same_apply_does_not_hold_a_prune(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        repo.apply([(ENV, d.Environment(name=n)) for n in ("Dev", "Old")])
        repo.apply([(LIFECYCLE, _lifecycle("Main", "Dev", "Old"))])
        repo.apply([(LIFECYCLE, _lifecycle("Gone", "Old"))])
        # Main stops using Old in this very apply, and Gone goes with it: deletions follow
        # reverse dependency order, lifecycles before environments.
        items: Items = [(ENV, d.Environment(name="Dev")), (LIFECYCLE, _lifecycle("Main", "Dev"))]
        assert _apply_pruning(repo, items, ENV, LIFECYCLE) == [
            ("update", "lifecycle Main"),
            ("delete", "lifecycle Gone"),
            ("delete", "environment Old"),
        ]
        assert _names(s, repo, LIFECYCLE) == ["Default Lifecycle", "Main"]


def test_documents_that_refer_to_each_other_are_pruned_together(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    approve = d.Action(
        name="Approve", type="manual_intervention", instructions="ok", responsible_teams=["Ops"]
    )
    project = d.Project(
        name="Web", process=d.Process(steps=[d.Step(name="Approve", actions=[approve])])
    )
    team = d.Team(name="Ops", grants=[d.RoleGrant(role="deploy", projects=["Web"])])
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        repo.apply([(PROJECT, project), (TEAM, team)])
        assert _apply_pruning(repo, [], PROJECT, TEAM) == [
            ("delete", "team Ops"),
            ("delete", "project Web"),
        ]


def test_users_the_reference_table_does_not_know_also_hold_a_prune(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    def machines(stored: StoredDocument) -> str | None:
        if stored.spec.name == "Old":
            return "environment 'Old' is still used by machine(s) web-01"
        return None

    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        repo.apply([(ENV, d.Environment(name=n)) for n in ("Dev", "Old", "Spare")])
    items: Items = [(ENV, d.Environment(name="Dev"))]
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        prune = repo.prune_candidates(items, [ENV])
        with pytest.raises(FailedPrecondition, match="still used by machine"):
            repo.apply(items, prune=prune, still_used=machines)
        s.rollback()
    with sessions.begin() as s:
        assert _names(s, _repo(s, encryptor), ENV) == ["Dev", "Old", "Spare"]
