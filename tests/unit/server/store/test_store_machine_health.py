"""Machine health as stored: the 'unreachable' state, when failures began, and migration 0005."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.store import machines
from cuttle.server.store.database import _alembic_config, migrate, session_maker
from cuttle.server.store.records import MachineRecord
from tests.unit.server.machine_rows import add_machine


def _register(
    session: Session, name: str, *, replace: bool = False, seed: str = ""
) -> MachineRecord:
    return add_machine(session, name, seed=seed, replace=replace)


def test_a_run_of_failures_is_stored_and_a_success_ends_it(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        _register(session, "web-01")
        failing = machines.update_health(
            session,
            "web-01",
            health="unreachable",
            message="web-01 is unreachable: connection refused",
            checked_ms=1_000,
            unreachable_since_ms=1_000,
        )
    assert (failing.health, failing.unreachable_since_ms) == ("unreachable", 1_000)
    with sessions.begin() as session:
        stored = machines.get_by_name(session, "web-01")
        assert stored.health == "unreachable"
        assert stored.unreachable_since_ms == 1_000
        assert stored.health_message == "web-01 is unreachable: connection refused"
        healthy = machines.update_health(session, "web-01", health="healthy", checked_ms=2_000)
    assert (healthy.health, healthy.unreachable_since_ms) == ("healthy", None)


def test_re_registering_forgets_the_old_failures(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        _register(session, "web-01")
        machines.update_health(
            session, "web-01", health="unavailable", checked_ms=9, unreachable_since_ms=1
        )
    with sessions.begin() as session:
        again = _register(session, "web-01", replace=True, seed="new certificate")
    assert (again.health, again.unreachable_since_ms) == ("unknown", None)


def test_the_database_refuses_an_unknown_health(engine: Engine) -> None:
    with session_maker(engine).begin() as session:
        _register(session, "web-01")
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text("UPDATE machines SET health = 'sick'"))


def test_migration_0005_round_trips_an_unreachable_machine(engine: Engine) -> None:
    with session_maker(engine).begin() as session:
        _register(session, "web-01")
        machines.update_health(
            session, "web-01", health="unreachable", checked_ms=9, unreachable_since_ms=5
        )
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0004")
    with engine.connect() as connection:
        # The older schema has no 'unreachable': such a machine was counted unavailable.
        assert connection.execute(text("SELECT health FROM machines")).scalar_one() == (
            "unavailable"
        )
    migrate(engine)
    with session_maker(engine).begin() as session:
        record = machines.update_health(
            session, "web-01", health="unreachable", checked_ms=20, unreachable_since_ms=20
        )
    assert (record.health, record.unreachable_since_ms) == ("unreachable", 20)
