"""Two library sets one project includes must not tie on a variable: neither would win."""

from __future__ import annotations

import os

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.domain.variable_scopes import (
    Scope,
    ScopeContext,
    VariableValue,
    find_library_set_ambiguities,
    resolve,
)
from cuttle.server.encryption import Encryptor
from cuttle.server.errors import ValidationFailed
from cuttle.server.model import documents as d
from cuttle.server.model.kinds import kind
from cuttle.server.model.repository import ModelRepository
from cuttle.server.store import documents as store

ENV = kind("environment")
PROJECT = kind("project")
SET = kind("library_variable_set")


@pytest.fixture
def encryptor() -> Encryptor:
    return Encryptor(os.urandom(32))


def _repo(session: Session, encryptor: Encryptor) -> ModelRepository:
    space, _ = store.ensure_space(session)
    repo = ModelRepository(session, space, encryptor, actor="alice")
    repo.ensure_defaults()
    for name in ("Dev", "Production"):
        if repo.find_id("environment", name) is None:
            repo.create(ENV, d.Environment(name=name))
    return repo


def _port(value: str | None, sensitive: bool = False, **scope: list[str]) -> d.Variable:
    return d.Variable(name="Port", value=value, sensitive=sensitive, scope=d.Scope(**scope))


def _set(name: str, *variables: d.Variable) -> d.LibraryVariableSet:
    return d.LibraryVariableSet(name=name, variables=list(variables))


def _project(*sets: str, variables: tuple[d.Variable, ...] = ()) -> d.Project:
    return d.Project(name="Web", library_variable_sets=list(sets), variables=list(variables))


def _save_sets(repo: ModelRepository, *sets: d.LibraryVariableSet) -> None:
    for library_set in sets:
        repo.create(SET, library_set)


def test_including_two_sets_that_tie_is_refused_at_the_include(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        _save_sets(
            repo,
            _set("Common", _port("80", environments=["Dev"])),
            _set("Web defaults", _port("8080", environments=["Dev", "Production"])),
        )
        repo.create(PROJECT, _project("Common"))
        with pytest.raises(ValidationFailed) as caught:
            repo.update(PROJECT, "Web", _project("Common", "Web defaults"))
    [(field, message)] = caught.value.violations
    assert field == "library_variable_sets[1]"
    assert message.startswith("variable 'Port' is ambiguous in project 'Web': ")
    assert "library variable set 'Common' scoped to environment Dev and" in message
    assert "library variable set 'Web defaults' scoped to environment Dev, Production" in message
    assert "when the environment is Dev" in message


@pytest.mark.parametrize(
    ("common", "other", "project"),
    [
        # The project's own value with the same scope wins over both sets.
        ([_port("80", environments=["Dev"])], [_port("81", environments=["Dev"])], ["Dev"]),
        # The same value either way: nothing to choose.
        ([_port("80", environments=["Dev"])], [_port("80", environments=["Dev"])], None),
        # They never meet.
        ([_port("80", environments=["Dev"])], [_port("81", environments=["Production"])], None),
        # One is more specific and wins.
        ([_port("80", environments=["Dev"])], [_port("81", roles=["web"])], None),
        # Only a machine with both roles meets both, which is allowed as within one set.
        ([_port("80", roles=["web"])], [_port("81", roles=["db"])], None),
    ],
)
def test_sets_that_never_leave_a_tie_open_may_be_included_together(
    sessions: sessionmaker[Session],
    encryptor: Encryptor,
    common: list[d.Variable],
    other: list[d.Variable],
    project: list[str] | None,
) -> None:
    own = () if project is None else (_port("own", environments=project),)
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        _save_sets(repo, _set("Common", *common), _set("Other", *other))
        repo.create(PROJECT, _project("Common", "Other", variables=own))


def test_a_project_value_with_other_kinds_does_not_settle_a_tie(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        _save_sets(
            repo, _set("A", _port("80", roles=["web"])), _set("B", _port("81", roles=["web"]))
        )
        with pytest.raises(ValidationFailed, match="when the machine has role web"):
            repo.create(PROJECT, _project("A", "B", variables=(_port("own"),)))


def test_changing_a_set_is_checked_against_every_project_that_includes_it(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        _save_sets(repo, _set("A", _port("80")), _set("B"))
        repo.create(PROJECT, _project("A", "B"))
        with pytest.raises(ValidationFailed) as caught:
            repo.update(SET, "B", _set("B", d.Variable(name="Other", value="x"), _port("81")))
    [(field, message)] = caught.value.violations
    assert field == "variables[1]"
    assert "in project 'Web'" in message
    assert "when nothing is scoped" in message


def test_an_apply_locates_the_tie_at_the_project_it_brings_together(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    items = [
        (SET, _set("A", _port("80", environments=["Dev"]))),
        (SET, _set("B", _port("81", environments=["Dev"]))),
        (PROJECT, _project("B", "A")),
    ]
    with pytest.raises(ValidationFailed) as caught, sessions.begin() as s:
        _repo(s, encryptor).apply(items, prefixes=["f:sets[0]", "f:sets[1]", "f:projects[0]"])
    assert [field for field, _ in caught.value.violations] == [
        "f:projects[0].library_variable_sets[1]"
    ]
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        assert repo.find_id("library_variable_set", "A") is None


def test_sensitive_values_are_compared_by_what_they_hold(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        _save_sets(
            repo,
            _set("A", _port("secret", sensitive=True)),
            _set("B", _port("secret", sensitive=True)),
            _set("C", _port("other secret", sensitive=True)),
        )
        repo.create(PROJECT, _project("A", "B"))
        with pytest.raises(ValidationFailed, match="'Port' is ambiguous") as caught:
            repo.update(PROJECT, "Web", _project("A", "B", "C"))
    assert "secret" not in str(caught.value)


def test_library_set_ambiguities_leave_the_project_tier_and_one_set_alone() -> None:
    def value(text: str, library_set: str | None, environment: str = "Dev") -> VariableValue:
        return VariableValue("Port", text, Scope.of(environment=environment), False, library_set)

    project_vs_set = [value("1", None), value("2", "A")]
    within_one_set = [value("1", "A"), value("2", "A")]
    assert find_library_set_ambiguities(project_vs_set) == []
    assert find_library_set_ambiguities(within_one_set) == []
    [found] = find_library_set_ambiguities([value("1", "A"), value("2", "B")])
    assert (found.first.library_set, found.second.library_set) == ("A", "B")
    shadowed = [value("0", None), value("1", "A"), value("2", "B")]
    assert find_library_set_ambiguities(shadowed) == []


def test_a_tie_between_sets_that_slipped_through_resolves_the_same_whatever_the_order() -> None:
    a = VariableValue("Port", "81", Scope.of(environment="Dev"), library_set="A")
    b = VariableValue("Port", "80", Scope.of(environment="Dev"), library_set="B")
    context = ScopeContext(environment="Dev")
    assert resolve([a, b], context)["Port"].value == "80"
    assert resolve([b, a], context)["Port"].value == "80"
