"""Each store test runs against a freshly migrated SQLite file and PostgreSQL schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.store.database import create_engine_for, migrate, session_maker, sqlite_url

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_PG_LIBPQ = "postgresql://postgres@127.0.0.1:5432/test"


@cache
def _postgres_problem() -> str | None:
    """Say why PostgreSQL cannot be used, once per worker; None when it answers."""
    try:
        with psycopg.connect(_PG_LIBPQ, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        return str(error).strip() or type(error).__name__
    return None


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated database; on PostgreSQL a schema of its own, so xdist workers do not meet."""
    if request.param == "sqlite":
        yield from _migrated_sqlite(tmp_path)
        return

    problem = _postgres_problem()
    if problem is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not answering: {problem}")
    schema = f"t_{uuid.uuid4().hex}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        # search_path set at connect time puts every table, alembic_version included, into the
        # test's schema; %3D is the URL-encoded "=".
        pg_engine = create_engine_for(f"{PG_URL}?options=-csearch_path%3D{schema}")
        try:
            migrate(pg_engine)
            yield pg_engine
        finally:
            pg_engine.dispose()
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


def _migrated_sqlite(tmp_path: Path) -> Iterator[Engine]:
    sqlite_engine = create_engine_for(sqlite_url(tmp_path / "cuttle.db"))
    try:
        migrate(sqlite_engine)
        yield sqlite_engine
    finally:
        sqlite_engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite database, for what only SQLite has (pragmas, BEGIN IMMEDIATE)."""
    yield from _migrated_sqlite(tmp_path)


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """Session factory for the migrated database; tests use `with sessions.begin() as s:`."""
    return session_maker(engine)


@pytest.fixture
def engine_dialect(engine: Engine) -> str:
    """The dialect under test, for the few assertions that differ."""
    return engine.dialect.name
