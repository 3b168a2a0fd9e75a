"""API keys: the secret is shown once, verifies until revoked, and is never stored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.store import api_keys
from cuttle.server.store.errors import InvalidArgument, NotFound


def test_created_key_has_the_documented_shape(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        record, plaintext = api_keys.create(session, "deployer", ["admin"])
    assert re.fullmatch(r"CUTTLE-[A-Za-z0-9_-]{40}", plaintext)
    assert record.prefix == plaintext[7:15]
    assert record.permissions == ("admin",)
    assert not record.revoked


def test_verify_accepts_the_key_and_refuses_others(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        record, plaintext = api_keys.create(session, "registrar", ["machine:register"])
        other, _ = api_keys.create(session, "other", ["admin"])
    with sessions.begin() as session:
        assert api_keys.verify(session, plaintext) == record
        # Same prefix, different secret: found as a candidate, refused by the hash.
        forged = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
        assert api_keys.verify(session, forged) is None
        assert api_keys.verify(session, "") is None
        assert api_keys.verify(session, plaintext + "x") is None
        assert api_keys.verify(session, "CUTTLE-" + "x" * 40) is None
    assert other.id != record.id


def test_revoked_key_no_longer_verifies(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        record, plaintext = api_keys.create(session, "ci", ["admin"])
    with sessions.begin() as session:
        revoked = api_keys.revoke(session, record.id)
        again = api_keys.revoke(session, record.id)
    with sessions.begin() as session:
        assert api_keys.verify(session, plaintext) is None
        listed = api_keys.list_keys(session)
    assert revoked.revoked
    assert again.revoked
    assert [(k.id, k.revoked) for k in listed] == [(record.id, True)]


def test_revoking_an_unknown_key_is_not_found(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session, pytest.raises(NotFound, match="API key 'nope'"):
        api_keys.revoke(session, "nope")


def test_key_needs_a_name(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session, pytest.raises(InvalidArgument):
        api_keys.create(session, "  ", ["admin"])


def test_list_is_oldest_first(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        api_keys.create(session, "second", [], created_ms=2)
        api_keys.create(session, "first", [], created_ms=1)
    with sessions.begin() as session:
        assert [k.name for k in api_keys.list_keys(session)] == ["first", "second"]


def test_database_never_holds_the_secret(
    engine: Engine, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with sessions.begin() as session:
        _, plaintext = api_keys.create(session, "deployer", ["admin"])
    secret = plaintext.removeprefix("CUTTLE-")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM api_keys")).all()
    dumped = repr(rows)
    assert api_keys.hash_key(plaintext) in dumped
    assert secret not in dumped
    assert secret[8:] not in dumped
    if engine.dialect.name == "sqlite":
        # The files themselves (database and write-ahead log), not only what SQL shows.
        engine.dispose()
        for path in tmp_path.glob("cuttle.db*"):
            assert secret[8:].encode() not in path.read_bytes(), path


def test_revoking_a_key_revokes_every_key_created_with_it(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        root, root_secret = api_keys.create(session, "root", ["admin"], created_ms=1)
        child, child_secret = api_keys.create(
            session, "child", [], created_ms=2, created_by_key_id=root.id
        )
        grandchild, grandchild_secret = api_keys.create(
            session, "grandchild", [], created_ms=3, created_by_key_id=child.id
        )
        sibling, sibling_secret = api_keys.create(session, "sibling", ["admin"], created_ms=4)
        nephew, _ = api_keys.create(
            session, "nephew", [], created_ms=5, created_by_key_id=sibling.id
        )
    assert grandchild.created_by_key_id == child.id

    with sessions.begin() as session:
        revoked = api_keys.revoke_with_descendants(session, [child.id])
    assert [(k.name, k.revoked) for k in revoked] == [("child", True), ("grandchild", True)]

    with sessions.begin() as session:
        assert api_keys.verify(session, root_secret) is not None
        assert api_keys.verify(session, child_secret) is None
        assert api_keys.verify(session, grandchild_secret) is None
        assert api_keys.verify(session, sibling_secret) is not None
        # Revoking the root reaches the already revoked subtree again, harmlessly.
        assert api_keys.revoke(session, root.id).revoked
        assert not api_keys.get(session, nephew.id).revoked
        listed = {k.name: (k.revoked, k.created_by_key_id) for k in api_keys.list_keys(session)}
    assert listed == {
        "root": (True, None),
        "child": (True, root.id),
        "grandchild": (True, child.id),
        "sibling": (False, None),
        "nephew": (False, sibling.id),
    }


def test_revoking_all_of_a_users_keys_and_an_unknown_key(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        first, _ = api_keys.create(session, "first", [], created_ms=1)
        second, _ = api_keys.create(session, "second", [], created_ms=2)
        made, _ = api_keys.create(session, "made", [], created_ms=3, created_by_key_id=first.id)
    with sessions.begin() as session:
        revoked = api_keys.revoke_with_descendants(session, [first.id, second.id])
    assert [k.name for k in revoked] == ["first", "second", "made"]
    with sessions.begin() as session, pytest.raises(NotFound, match="API key 'nope'"):
        api_keys.revoke_with_descendants(session, [made.id, "nope"])


def test_deleting_a_key_deletes_the_keys_created_with_it(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    # Deletion happens when a key's user is removed (ON DELETE CASCADE from documents).
    with sessions.begin() as session:
        parent, _ = api_keys.create(session, "parent", [])
        api_keys.create(session, "made", [], created_by_key_id=parent.id)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM api_keys WHERE id = :id"), {"id": parent.id})
    with sessions.begin() as session:
        assert api_keys.list_keys(session) == []
