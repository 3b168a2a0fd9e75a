"""The model's documents in the store: names in, ids stored, secrets sealed, changes audited."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.encryption import Encryptor
from cuttle.server.errors import NotFound, ValidationFailed
from cuttle.server.model import documents as d
from cuttle.server.model.kinds import kind
from cuttle.server.model.repository import ModelRepository
from cuttle.server.store import documents as store
from cuttle.server.store import events
from cuttle.server.store.errors import Conflict, FailedPrecondition

ENV = kind("environment")
LIFECYCLE = kind("lifecycle")
PROJECT = kind("project")
TEAM = kind("team")


@pytest.fixture
def encryptor() -> Encryptor:
    return Encryptor(os.urandom(32))


def _repo(session: Session, encryptor: Encryptor) -> ModelRepository:
    space, _ = store.ensure_space(session)
    repo = ModelRepository(session, space, encryptor, actor="alice")
    repo.ensure_defaults()
    return repo


def _envs(repo: ModelRepository, *names: str) -> None:
    for name in names:
        repo.create(ENV, d.Environment(name=name))


def test_references_are_stored_as_ids_and_survive_a_rename(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        _envs(repo, "Dev", "Test")
        phase = d.Phase(name="First", automatic_environments=["dev"])
        repo.create(LIFECYCLE, d.Lifecycle(name="Main", phases=[phase]))
        record, stored = repo.stored_body(LIFECYCLE, "Main")
        dev_id = store.find(s, repo.space.id, "environment", "Dev")
        assert dev_id is not None
        assert isinstance(stored, d.Lifecycle)
        assert stored.phases[0].automatic_environments == [dev_id.id]
        repo.update(ENV, "Dev", d.Environment(name="Development"))
        lifecycle = repo.get(LIFECYCLE, "Main").spec
        assert isinstance(lifecycle, d.Lifecycle)
        assert lifecycle.phases[0].automatic_environments == ["Development"]


def test_unknown_references_are_all_reported_with_their_paths(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        _envs(repo, "Dev")
        lifecycle = d.Lifecycle(
            name="Main",
            phases=[
                d.Phase(name="A", automatic_environments=["Dev", "Nowhere"]),
                d.Phase(name="B", optional_environments=["Elsewhere"]),
            ],
        )
        with pytest.raises(ValidationFailed) as caught:
            repo.create(LIFECYCLE, lifecycle)
    assert caught.value.violations == [
        ("phases[0].automatic_environments[1]", "no environment named 'Nowhere'"),
        ("phases[1].optional_environments[0]", "no environment named 'Elsewhere'"),
    ]


def test_deleting_a_document_in_use_says_by_what(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        _envs(repo, "Dev")
        repo.create(
            LIFECYCLE,
            d.Lifecycle(name="Main", phases=[d.Phase(name="A", automatic_environments=["Dev"])]),
        )
        with pytest.raises(FailedPrecondition, match=r"lifecycle 'Main' at phases\[0\]"):
            repo.delete(ENV, "Dev")
        repo.delete(LIFECYCLE, "Main")
        repo.delete(ENV, "Dev")
        with pytest.raises(NotFound):
            repo.get(ENV, "Dev")


def test_names_are_unique_per_kind_regardless_of_case(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        _envs(repo, "Dev")
        with pytest.raises(Conflict):
            repo.create(ENV, d.Environment(name="DEV"))


def test_stale_revision_is_refused(sessions: sessionmaker[Session], encryptor: Encryptor) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        _envs(repo, "Dev")
        first = repo.get(ENV, "Dev").record.revision
        repo.update(ENV, "Dev", d.Environment(name="Dev", description="x"), first)
        with pytest.raises(FailedPrecondition, match="changed by someone else"):
            repo.update(ENV, "Dev", d.Environment(name="Dev", description="y"), first)


def _project_with_secret(secret: str | None) -> d.Project:
    return d.Project(
        name="Web",
        variables=[
            d.Variable(name="Greeting", value="hello"),
            d.Variable(name="DbPassword", value=secret, sensitive=True),
        ],
    )


def test_sensitive_values_are_encrypted_write_only_and_kept_when_omitted(
    sessions: sessionmaker[Session], encryptor: Encryptor, engine_dialect: str
) -> None:
    secret = "s3cr3t-" + base64.b16encode(os.urandom(8)).decode()
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        repo.create(PROJECT, _project_with_secret(secret))
        shown = repo.get(PROJECT, "Web").spec
        assert isinstance(shown, d.Project)
        assert shown.variables[1].value is None
        assert shown.variables[1].sensitive
        _, stored = repo.stored_body(PROJECT, "Web")
        assert isinstance(stored, d.Project)
        ciphertext = stored.variables[1].value
        assert ciphertext is not None
        assert secret not in ciphertext
        assert encryptor.decrypt(ciphertext, "DbPassword") == secret
        # Omitting the value keeps it; giving the same value again changes nothing.
        (change,) = repo.apply([(PROJECT, _project_with_secret(None))])
        assert change.action == "unchanged"
        (change,) = repo.apply([(PROJECT, _project_with_secret(secret))])
        assert change.action == "unchanged"
        (change,) = repo.apply([(PROJECT, _project_with_secret("other"))])
        assert change.action == "update"
        assert change.paths == ("variables[1].value",)
    with sessions.begin() as s:
        dumped = " ".join(
            str(row)
            for query in ("SELECT * FROM documents", "SELECT * FROM events")
            for row in s.execute(text(query))
        )
        assert secret not in dumped
        assert "other" not in dumped.replace("another", "")


def test_a_new_sensitive_variable_without_a_value_is_refused(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        with pytest.raises(ValidationFailed, match="has no value on the server"):
            repo.create(PROJECT, _project_with_secret(None))


def test_apply_is_all_or_nothing_and_resolves_forward_references(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    team = d.Team(name="Ops", grants=[d.RoleGrant(role="deploy", projects=["Web"])])
    project = d.Project(
        name="Web",
        process=d.Process(
            steps=[
                d.Step(
                    name="Approve",
                    actions=[
                        d.Action(
                            name="Approve",
                            type="manual_intervention",
                            instructions="check",
                            responsible_teams=["Ops"],
                        )
                    ],
                )
            ]
        ),
    )
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        bad = d.Environment(name="Prod")
        broken = d.Lifecycle(name="L", phases=[d.Phase(name="P", automatic_environments=["Nope"])])
        with pytest.raises(ValidationFailed):
            repo.apply([(ENV, bad), (LIFECYCLE, broken)], prefixes=["a", "b"])
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        assert store.find(s, repo.space.id, "environment", "Prod") is None
        changes = repo.apply([(PROJECT, project), (TEAM, team)])
        assert [c.action for c in changes] == ["create", "create"]
        assert [c.action for c in repo.apply([(PROJECT, project), (TEAM, team)])] == [
            "unchanged",
            "unchanged",
        ]
        with pytest.raises(FailedPrecondition, match="team 'Ops'"):
            repo.delete(PROJECT, "Web")


def test_apply_orders_environments_as_the_file_lists_them(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        _envs(repo, "Dev", "Staging", "Test", "Prod")
        repo.apply([(ENV, d.Environment(name=n)) for n in ("Prod", "Test", "Dev")])
        assert [e.spec.name for e in repo.list_documents(ENV).items] == [
            "Prod",
            "Staging",
            "Test",
            "Dev",
        ]


def test_every_change_is_an_event(sessions: sessionmaker[Session], encryptor: Encryptor) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        _envs(repo, "Dev")
        repo.update(ENV, "Dev", d.Environment(name="Dev", use_guided_failure=True))
        repo.delete(ENV, "Dev")
        page = events.list_page(s, repo.space.id, kind="environment")
    assert [(e.category, e.actor) for e in page.items] == [
        ("deleted", "alice"),
        ("modified", "alice"),
        ("created", "alice"),
    ]
    assert page.items[1].details["changed"] == ["use_guided_failure"]


def test_events_of_one_millisecond_keep_the_order_they_happened_in(
    sessions: sessionmaker[Session], encryptor: Encryptor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One apply that deletes several documents writes their events within one millisecond.
    monkeypatch.setattr(events, "now_ms", lambda: 1_700_000_000_000)
    names = [f"env-{i:02}" for i in range(30)]
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        _envs(repo, *names)
        page = events.list_page(s, repo.space.id, kind="environment", page_size=10)
        seen = [e.document_name for e in page.items]
        while page.next_page_token is not None:
            page = events.list_page(
                s, repo.space.id, kind="environment", page_size=10, page_token=page.next_page_token
            )
            seen.extend(e.document_name for e in page.items)
    assert seen == list(reversed(names))


def test_paging_walks_every_document_once(
    sessions: sessionmaker[Session], encryptor: Encryptor
) -> None:
    with sessions.begin() as s:
        repo = _repo(s, encryptor)
        _envs(repo, *(f"env-{i:03}" for i in range(25)))
        seen: list[str] = []
        token = None
        while True:
            page = repo.list_documents(ENV, page_size=7, page_token=token)
            seen.extend(e.spec.name for e in page.items)
            token = page.next_page_token
            if token is None:
                break
    assert seen == [f"env-{i:03}" for i in range(25)]


def test_key_file_must_be_owner_only(tmp_path: Path) -> None:
    from cuttle.server.encryption import KeyFileError, create_key_file

    path = create_key_file(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    box = Encryptor.from_home(tmp_path)
    assert box.decrypt(box.encrypt("x", "N"), "n") == "x"
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        Encryptor.from_home(tmp_path)
    with pytest.raises(FileExistsError):
        create_key_file(tmp_path)
