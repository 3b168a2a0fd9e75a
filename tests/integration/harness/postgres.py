"""A schema of a test's own in the machine's PostgreSQL, and the URLs servers use to reach it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

LIBPQ = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema in the shared PostgreSQL, dropped afterwards; skips when it is down.

    Ask for it before `cluster`, so the servers using it are stopped before it is dropped.
    """
    try:
        admin = psycopg.connect(LIBPQ, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not answering: {exc}")
    name = f"t_{uuid.uuid4().hex}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{name}"')
        try:
            yield name
        finally:
            admin.execute(f'DROP SCHEMA "{name}" CASCADE')


def server_url(schema: str, application: str = "cuttle") -> str:
    """The SQLAlchemy URL of a server whose tables live in schema."""
    return (
        "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        f"?options=-csearch_path%3D{schema}&application_name={application}"
    )


def query(schema: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Rows of one statement run in schema (for what no API shows, e.g. a task's owner)."""
    with psycopg.connect(LIBPQ, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        return list(conn.execute(sql, params).fetchall())  # type: ignore[arg-type]
