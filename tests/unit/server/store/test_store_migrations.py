"""The Alembic history builds exactly the schema the models describe, on both dialects."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from cuttle.server.store.database import current_revision, head_revision, migrate
from cuttle.server.store.models import Base


def test_models_and_migrations_agree(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_database_is_at_head_and_migrating_again_changes_nothing(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    migrate(engine)
    assert current_revision(engine) == head_revision()


def test_alembic_version_lives_with_the_tables(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert "alembic_version" in tables
    assert set(Base.metadata.tables) <= tables


def test_sqlite_connections_get_their_pragmas(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as connection:
        pragma = connection.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA foreign_keys").scalar() == 1
        assert pragma("PRAGMA busy_timeout").scalar() == 5000
        assert pragma("PRAGMA synchronous").scalar() == 1  # NORMAL
