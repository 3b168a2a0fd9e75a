"""The engine tests here run on SQLite and PostgreSQL with the store tests' fixtures."""

from __future__ import annotations

from tests.unit.server.store.conftest import engine, sessions

__all__ = ["engine", "sessions"]
