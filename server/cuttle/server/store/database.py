"""Engines for SQLite and PostgreSQL, sessions, and running the Alembic migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Execution option for transactions that only read: on SQLite they begin DEFERRED so that they
# do not take the write lock; every other transaction begins IMMEDIATE.
READ_ONLY = "cuttle_read_only"

# An arbitrary constant: several server nodes starting at once must not migrate concurrently.
_MIGRATION_LOCK_KEY = 0x43757474  # "Cutt"


def sqlite_url(path: Path) -> str:
    """Return the SQLAlchemy URL of the SQLite database file at path."""
    return f"sqlite+pysqlite:///{path.resolve()}"


def create_engine_for(url: str, *, echo: bool = False) -> Engine:
    """Create an engine for url; SQLite gets its pragmas and BEGIN IMMEDIATE transactions."""
    engine = create_engine(url, echo=echo)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _connection_record: Any) -> None:
    # The sqlite3 driver's own transaction handling only emits BEGIN at the first write, so the
    # reads before it are outside the transaction. Turn it off; _sqlite_on_begin emits BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # WAL: readers do not block the writer and the writer does not block readers, so the
        # API keeps answering while log lines are being stored.
        cursor.execute("PRAGMA journal_mode=WAL")
        # SQLite ignores foreign keys unless asked, per connection; we rely on them (cascades).
        cursor.execute("PRAGMA foreign_keys=ON")
        # Wait up to 5 s for another writer instead of failing at once with "database is locked".
        cursor.execute("PRAGMA busy_timeout=5000")
        # In WAL mode NORMAL is still crash-safe for the database (a power loss may lose the
        # last commits, never corrupt); FULL would fsync on every commit of every log batch.
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # IMMEDIATE takes the write lock up front. With a deferred BEGIN, a transaction that read
    # first and then writes while another writer commits fails at once with "database is
    # locked" (its snapshot is stale), and busy_timeout cannot help with that.
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def data_dir(engine: Engine) -> Path | None:
    """The directory an SQLite database lives in (whose free space matters); None otherwise."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database).resolve().parent


def session_maker(engine: Engine) -> sessionmaker[Session]:
    """Return a session factory whose objects stay readable after commit."""
    # expire_on_commit=False: repositories convert rows to records inside the transaction, but a
    # caller that holds an ORM object past commit should not trigger a surprise reload.
    return sessionmaker(bind=engine, expire_on_commit=False)


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Without it Alembic warns that it falls back to legacy path splitting.
    config.set_main_option("path_separator", "os")
    # env.py migrates on this connection, inside the caller's transaction.
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database behind engine to revision (default: the newest), in one transaction."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Held until commit: a second node starting at the same time waits, then finds the
            # schema already upgraded. (On SQLite, BEGIN IMMEDIATE already serializes.)
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
        command.upgrade(_alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to an older revision (tests of upgrades; operators restoring)."""
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), revision)


def current_revision(engine: Engine) -> str | None:
    """Return the Alembic revision the database is at (None: never migrated)."""
    with engine.connect().execution_options(**{READ_ONLY: True}) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """Return the newest revision the code knows, which migrate() upgrades to."""
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    head = script.get_current_head()
    if head is None:
        raise RuntimeError(f"no Alembic revisions found in {MIGRATIONS_DIR}")
    return head
