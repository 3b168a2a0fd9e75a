"""Engines: SQLite writers begin IMMEDIATE, readers may opt out; URLs for database files."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.dialects import postgresql

from cuttle.server.store.database import (
    READ_ONLY,
    create_engine_for,
    current_revision,
    head_revision,
    migrate,
    sqlite_url,
)
from cuttle.server.store.task_log import _LOCK_AND_READ


def test_sqlite_url_is_absolute(tmp_path: Path) -> None:
    assert sqlite_url(tmp_path / "a.db") == f"sqlite+pysqlite:///{tmp_path.resolve()}/a.db"


def _statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    return seen


def test_sqlite_transactions_begin_immediate_unless_read_only(sqlite_engine: Engine) -> None:
    engine = sqlite_engine
    seen = _statements(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("SELECT 1")
    with engine.connect().execution_options(**{READ_ONLY: True}) as connection:
        connection.exec_driver_sql("SELECT 2")
    assert seen == ["BEGIN IMMEDIATE", "SELECT 1", "BEGIN", "SELECT 2"]


def test_sqlite_writer_waits_for_another_writer(sqlite_engine: Engine) -> None:
    engine = sqlite_engine

    def read_then_write(key: str) -> None:
        with engine.begin() as connection:
            connection.exec_driver_sql("SELECT count(*) FROM api_keys")
            connection.exec_driver_sql(
                "INSERT INTO api_keys VALUES (?, ?, ?, 'p', '[]', 0, 0, NULL, NULL)",
                (key, key, key),
            )

    # Both transactions read before they write. With a deferred BEGIN the second one would
    # read a snapshot, then fail to write once the first commits ("database is locked", at
    # once); with BEGIN IMMEDIATE it waits at BEGIN until the first commits, then succeeds.
    with ThreadPoolExecutor(max_workers=1) as pool, engine.begin() as first:
        first.exec_driver_sql("SELECT count(*) FROM api_keys")
        second = pool.submit(read_then_write, "b")
        with pytest.raises(FutureTimeout):
            second.result(timeout=0.3)
        first.exec_driver_sql(
            "INSERT INTO api_keys VALUES ('a', 'a', 'a', 'p', '[]', 0, 0, NULL, NULL)"
        )
        first.commit()
        second.result(timeout=10)
    with engine.connect() as reader:
        assert reader.exec_driver_sql("SELECT count(*) FROM api_keys").scalar() == 2


def test_log_append_locks_the_task_row_on_postgresql() -> None:
    # The statement as PostgreSQL receives it; SQLite has no row locks (BEGIN IMMEDIATE).
    assert "FOR UPDATE OF tasks" in str(_LOCK_AND_READ.compile(dialect=postgresql.dialect()))


def test_a_new_database_has_no_revision_until_migrated(tmp_path: Path) -> None:
    engine = create_engine_for(sqlite_url(tmp_path / "fresh.db"))
    try:
        assert current_revision(engine) is None
        migrate(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_read_transactions_do_not_take_the_sqlite_write_lock(engine: Engine) -> None:
    import asyncio

    from cuttle.server.store.database import session_maker
    from cuttle.server.store.transactions import Transactions

    seen = _statements(engine)
    tx = Transactions(session_maker(engine), workers=1)
    try:
        count = asyncio.run(
            tx.read(
                lambda s: s.connection().exec_driver_sql("SELECT count(*) FROM api_keys").scalar()
            )
        )
    finally:
        tx.close()
    assert count == 0
    if engine.dialect.name == "sqlite":
        assert seen[:2] == ["BEGIN", "SELECT count(*) FROM api_keys"], seen
    assert not any(s.startswith("BEGIN IMMEDIATE") for s in seen), seen
