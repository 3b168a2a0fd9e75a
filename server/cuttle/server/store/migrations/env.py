"""Alembic environment: migrates on the connection that database.migrate() passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from cuttle.server.store.models import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    # Offline (SQL script) mode and the alembic command line are not supported: the server
    # migrates itself at start-up, on the engine it is configured with.
    raise RuntimeError("run migrations with cuttle.server.store.database.migrate(engine)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds the table, and is a no-op elsewhere.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
