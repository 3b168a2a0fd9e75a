"""Handler exceptions become the wire kinds clients act on."""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import OperationalError

from cuttle.protocol.errors import code_for_kind
from cuttle.server.api.auth import error_kind
from cuttle.server.errors import FailedPrecondition, ValidationFailed
from cuttle.server.store import errors as store_errors


def test_a_locked_sqlite_database_is_busy_not_internal() -> None:
    locked = OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    kind, message = error_kind(locked)
    assert kind == "busy"
    assert "retry" in message
    assert code_for_kind(kind).name == "UNAVAILABLE"


def test_other_database_errors_stay_internal_and_say_where_to_look() -> None:
    broken = OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x"))
    assert error_kind(broken) == (
        "internal",
        "internal error (OperationalError); see the server log",
    )


def test_store_and_server_errors_keep_their_kinds() -> None:
    assert error_kind(store_errors.FailedPrecondition("in use"))[0] == "failed_precondition"
    assert error_kind(FailedPrecondition("stale"))[0] == "failed_precondition"
    assert error_kind(ValidationFailed([("a.b", "bad")])) == ("invalid_argument", "a.b: bad")
    assert code_for_kind("failed_precondition").name == "FAILED_PRECONDITION"


def test_a_full_server_disk_says_so_and_is_not_internal() -> None:
    kind, message = error_kind(store_errors.ServerDiskFull("database or disk is full"))
    assert kind == "disk_full"
    assert message.startswith("server disk full: ")
    assert code_for_kind(kind).name == "RESOURCE_EXHAUSTED"


def test_a_store_that_stayed_unavailable_is_busy() -> None:
    kind, _ = error_kind(store_errors.StoreUnavailable("locked for 300s"))
    assert kind == "busy"
