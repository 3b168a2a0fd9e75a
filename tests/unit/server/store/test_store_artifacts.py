"""Artifacts kept in the database: stored once, read back byte for byte."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.domain.task_specs import ScriptTaskSpec
from cuttle.server.store import artifacts, tasks
from cuttle.server.store.errors import Conflict, NotFound

SPEC = ScriptTaskSpec(syntax="bash", body="true")


def test_put_get_list_and_retry(sessions: sessionmaker[Session]) -> None:
    content = b"\x00\xffreport"
    with sessions.begin() as session:
        task = tasks.create_script_task(
            session, description="a", spec=SPEC, machine_names=["Web-1", "Web-2"]
        )
        stored = artifacts.put(session, task.id, "Web-1", "report.bin", content)
        again = artifacts.put(session, task.id, "Web-1", "report.bin", content)
        artifacts.put(session, task.id, "Web-2", "a.txt", b"a")
    with sessions.begin() as session:
        assert artifacts.get_content(session, task.id, "Web-1", "report.bin") == content
        listed = artifacts.list_for_task(session, task.id)
        with pytest.raises(Conflict, match="different content"):
            artifacts.put(session, task.id, "Web-1", "report.bin", b"other")
    with sessions.begin() as session:
        with pytest.raises(NotFound):
            artifacts.get_content(session, task.id, "Web-1", "missing")
        with pytest.raises(NotFound):
            artifacts.put(session, task.id, "Web-9", "x", b"")
    assert stored == again
    assert stored.sha256 == hashlib.sha256(content).hexdigest()
    assert stored.size == len(content)
    assert [(a.machine_name, a.name) for a in listed] == [
        ("Web-1", "report.bin"),
        ("Web-2", "a.txt"),
    ]
