"""A tag set may not lose a tenant tag that a tenant, project, variable set or machine still names.

Losing it any way counts: removed from the list, the set renamed, deleted, or pruned by an apply.
The refusal names every user (kind, name, field), as a refused delete does, and writes nothing.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.encryption import Encryptor
from cuttle.server.errors import FailedPrecondition
from cuttle.server.model import documents as d
from cuttle.server.model.kinds import Kind, kind
from cuttle.server.model.repository import ModelRepository
from cuttle.server.store import documents as store
from cuttle.server.store import machines
from tests.unit.server.machine_rows import add_machine

TAG_SET = kind("tag_set")
TENANT = kind("tenant")
PROJECT = kind("project")
LIBRARY = kind("library_variable_set")

Items = list[tuple[Kind, d.Document]]


@pytest.fixture
def encryptor() -> Encryptor:
    return Encryptor(os.urandom(32))


def _repo(
    session: Session, encryptor: Encryptor, space: str = store.DEFAULT_SPACE
) -> ModelRepository:
    record, _ = store.ensure_space(session, space)
    repo = ModelRepository(session, record, encryptor, actor="alice")
    repo.ensure_defaults()
    return repo


def _tier(*tags: str, name: str = "Tier") -> d.TagSet:
    return d.TagSet(name=name, tags=list(tags))


def _action(name: str, tags: list[str]) -> d.Action:
    return d.Action(name=name, type="run_script", script=d.Script(body="echo hi"), tenant_tags=tags)


def _project() -> d.Project:
    return d.Project(
        name="Web",
        channels=[d.Channel(name="Default", is_default=True, tenant_tags=["Tier/Silver"])],
        process=d.Process(steps=[d.Step(name="Deploy", actions=[_action("Run", ["tier/gold"])])]),
        runbooks=[
            d.Runbook(
                name="Restart",
                process=d.Process(
                    steps=[d.Step(name="Restart", actions=[_action("Go", ["Tier/Bronze"])])]
                ),
            )
        ],
        variables=[
            d.Variable(name="Colour", value="gold", scope=d.Scope(tenant_tags=["Tier/Gold"]))
        ],
    )


def _seed(sessions: sessionmaker[Session], encryptor: Encryptor) -> None:
    with sessions.begin() as s:
        _repo(s, encryptor).apply(
            [
                (TAG_SET, _tier("Gold", "Silver", "Bronze", "Spare")),
                (
                    LIBRARY,
                    d.LibraryVariableSet(
                        name="Shared",
                        variables=[
                            d.Variable(
                                name="Tier", value="x", scope=d.Scope(tenant_tags=["Tier/Spare"])
                            )
                        ],
                    ),
                ),
                (PROJECT, _project()),
                (TENANT, d.Tenant(name="Acme", tags=["Tier/Gold"])),
            ]
        )


def _tags(sessions: sessionmaker[Session], encryptor: Encryptor) -> dict[str, list[str]]:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        return {
            stored.spec.name: list(stored.spec.tags)  # type: ignore[attr-defined]
            for stored in repo.export([TAG_SET])
        }


def test_removing_used_tags_by_update_is_refused_naming_each_user(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    _seed(sessions, encryptor)
    with sessions.begin() as s:
        with pytest.raises(FailedPrecondition) as refused:
            _repo(s, encryptor).update(TAG_SET, "Tier", _tier("Bronze"))
        s.rollback()
    lines = str(refused.value).splitlines()
    assert lines == [
        "tenant tag 'Tier/Gold' is still used by: tenant 'Acme' at tags[0]; "
        "project 'Web' at variables[0].scope.tenant_tags[0]; "
        "project 'Web' at process.steps[0].actions[0].tenant_tags[0]",
        "tenant tag 'Tier/Silver' is still used by: project 'Web' at channels[0].tenant_tags[0]",
        "tenant tag 'Tier/Spare' is still used by: "
        "library variable set 'Shared' at variables[0].scope.tenant_tags[0]",
    ]
    assert _tags(sessions, encryptor) == {"Tier": ["Gold", "Silver", "Bronze", "Spare"]}


def test_renaming_or_deleting_a_used_tag_set_is_refused(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    _seed(sessions, encryptor)
    with sessions.begin() as s:
        with pytest.raises(
            FailedPrecondition,
            match="'Tier/Bronze' is still used by: project "
            r"'Web' at runbooks\[0\]\.process\.steps\[0\]\.actions\[0\]",
        ):
            _repo(s, encryptor).update(
                TAG_SET, "Tier", _tier("Gold", "Silver", "Bronze", "Spare", name="Level")
            )
        s.rollback()
    with sessions.begin() as s:
        with pytest.raises(FailedPrecondition, match="'Tier/Gold' is still used by: tenant"):
            _repo(s, encryptor).delete(TAG_SET, "Tier")
        s.rollback()
    assert _tags(sessions, encryptor) == {"Tier": ["Gold", "Silver", "Bronze", "Spare"]}


def test_unused_tags_go_and_a_change_of_case_loses_nothing(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    _seed(sessions, encryptor)
    with sessions.begin() as s:
        _repo(s, encryptor).update(TAG_SET, "Tier", _tier("GOLD", "Silver", "Bronze", "Spare"))
    with sessions.begin() as s:
        _repo(s, encryptor).update(TAG_SET, "Tier", _tier("GOLD", "Silver", "Bronze", "Spare", "X"))
    with sessions.begin() as s:
        _repo(s, encryptor).update(TAG_SET, "Tier", _tier("GOLD", "Silver", "Bronze", "Spare"))
    assert _tags(sessions, encryptor) == {"Tier": ["GOLD", "Silver", "Bronze", "Spare"]}


def test_an_apply_may_remove_a_tag_together_with_its_last_users(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    _seed(sessions, encryptor)
    untagged: Items = [
        (TAG_SET, _tier("Silver", "Bronze", "Spare")),
        (PROJECT, _project().model_copy(update={"variables": [], "process": d.Process()})),
        (TENANT, d.Tenant(name="Acme")),
    ]
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        repo.apply(untagged)
    assert _tags(sessions, encryptor) == {"Tier": ["Silver", "Bronze", "Spare"]}


def test_an_apply_or_a_prune_that_loses_a_used_tag_writes_nothing(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    _seed(sessions, encryptor)
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        with pytest.raises(FailedPrecondition, match="'Tier/Gold' is still used by: tenant"):
            repo.apply(
                [(TAG_SET, _tier("Silver", "Bronze", "Spare")), (TENANT, d.Tenant(name="Other"))]
            )
        s.rollback()
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        items: Items = [(TAG_SET, _tier("Anything", name="Other"))]
        prune = repo.prune_candidates(items, [TAG_SET])
        assert [p.spec.name for p in prune] == ["Tier"]
        with pytest.raises(FailedPrecondition, match="'Tier/Silver' is still used by: project"):
            repo.apply(items, prune=prune)
        s.rollback()
    assert _tags(sessions, encryptor) == {"Tier": ["Gold", "Silver", "Bronze", "Spare"]}
    with sessions.begin() as s:
        assert [r.name for r in store.all_of_kind(s, _repo(s, encryptor).space.id, "tenant")] == [
            "Acme"
        ]


def test_machines_hold_the_default_space_tags_only(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        _repo(s, encryptor).create(TAG_SET, _tier("Gold", "Silver"))
        _repo(s, encryptor, "Other").create(TAG_SET, _tier("Gold", "Silver"))
        add_machine(s, "web-01")
        machines.update(s, "web-01", tenant_tags=["Tier/Silver", "tier/gold"])
    with sessions.begin() as s:
        with pytest.raises(FailedPrecondition) as refused:
            _repo(s, encryptor).update(TAG_SET, "Tier", _tier())
        s.rollback()
    assert str(refused.value).splitlines() == [
        "tenant tag 'Tier/Gold' is still used by: machine 'web-01' at tenant_tags[1]",
        "tenant tag 'Tier/Silver' is still used by: machine 'web-01' at tenant_tags[0]",
    ]
    # Machines' tags name the default space's tag sets (that is where they are checked).
    with sessions.begin() as s:
        _repo(s, encryptor, "Other").delete(TAG_SET, "Tier")


def test_a_long_list_of_users_is_cut_short(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        repo.create(TAG_SET, _tier("Gold"))
        for i in range(12):
            repo.create(TENANT, d.Tenant(name=f"T{i:02}", tags=["Tier/Gold"]))
    with sessions.begin() as s:
        with pytest.raises(FailedPrecondition) as refused:
            _repo(s, encryptor).delete(TAG_SET, "Tier")
        s.rollback()
    message = str(refused.value)
    assert "tenant 'T09' at tags[0] and 2 more" in message
    assert "T10" not in message
