"""The dashboard's cells follow deployments as they are recorded, change state and are deleted."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.domain.task_specs import ScriptTaskSpec
from cuttle.server.domain.task_states import TaskState
from cuttle.server.store import dashboard, releases, tasks
from cuttle.server.store import documents as doc_store
from cuttle.server.store.database import _alembic_config, migrate, session_maker
from cuttle.server.store.models import DashboardCell, Task

SPEC = ScriptTaskSpec(syntax="bash", body="true", timeout_seconds=60)


def _project(session: Session, name: str) -> tuple[str, str]:
    space, _ = doc_store.ensure_space(session)
    doc = doc_store.insert_document(
        session, space_id=space.id, kind="project", name=name, body={}, references=None
    )
    return space.id, doc.id


def _release(session: Session, space_id: str, project_id: str, version: str) -> str:
    return releases.create(
        session,
        space_id=space_id,
        project_id=project_id,
        channel="Default",
        version=version,
        version_key=version,
        notes="",
        snapshot={},
        created_by="test",
    ).id


def _task(session: Session) -> str:
    return tasks.create_script_task(
        session, description="deploy", spec=SPEC, machine_names=["web-01"]
    ).id


def test_latest_deployment_and_last_good_release_per_cell(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        space_id, web = _project(s, "Web")
        _, api = _project(s, "Api")
        r1 = _release(s, space_id, web, "1.0.0")
        r2 = _release(s, space_id, web, "1.1.0")
        a1 = _release(s, space_id, api, "7.0.0")
        t1, t2, t3 = _task(s), _task(s), _task(s)
        releases.record_deployment(
            s, release_id=r1, environment_id="dev", state="queued", task_id=t1
        )
        releases.record_deployment(
            s, release_id=a1, environment_id="dev", state="queued", task_id=t3
        )
    with sessions.begin() as s:
        tasks.set_state(s, t1, TaskState.RUNNING)
        tasks.set_state(s, t1, TaskState.SUCCESS)
        releases.set_deployment_state(s, t1, "success")
        releases.record_deployment(
            s, release_id=r2, environment_id="dev", state="queued", task_id=t2
        )
        tasks.set_state(s, t3, TaskState.RUNNING)
        tasks.set_state(s, t3, TaskState.WAITING)
    with sessions.begin() as s:
        cells = {(c.project_id, c.environment_id): c for c in dashboard.cells(s, space_id)}
    assert set(cells) == {(web, "dev"), (api, "dev")}
    # Queued behind the good one: the good one is still worth showing.
    assert cells[web, "dev"].release_version == "1.1.0"
    assert cells[web, "dev"].state is TaskState.QUEUED
    assert cells[web, "dev"].last_success_version == "1.0.0"
    # The task knows what the deployment row does not: it waits for a person.
    assert cells[api, "dev"].state is TaskState.WAITING
    assert cells[api, "dev"].last_success_version is None

    with sessions.begin() as s:
        tasks.set_state(s, t2, TaskState.RUNNING)
        tasks.set_state(s, t2, TaskState.FAILED)
        releases.set_deployment_state(s, t2, "failed")
        cell = {c.project_id: c for c in dashboard.cells(s, space_id)}[web]
    assert (cell.release_version, cell.state, cell.last_success_version) == (
        "1.1.0",
        TaskState.FAILED,
        "1.0.0",
    )
    assert cell.finished_ms is not None


def test_success_hides_the_last_good_release_and_keeps_warnings(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as s:
        space_id, web = _project(s, "Web")
        r1 = _release(s, space_id, web, "1.0.0")
        releases.record_deployment(s, release_id=r1, environment_id="test", state="success")
        t = _task(s)
        releases.record_deployment(
            s, release_id=r1, environment_id="test", state="queued", task_id=t
        )
        tasks.set_state(s, t, TaskState.RUNNING)
        tasks.set_state(s, t, TaskState.SUCCESS)
        # Nothing in the engine sets the flag yet; the column is what the dashboard reads.
        row = s.get(Task, t)
        assert row is not None
        row.has_warnings = True
        releases.set_deployment_state(s, t, "success")
    with sessions.begin() as s:
        (cell,) = dashboard.cells(s, space_id)
    assert cell.state is TaskState.SUCCESS
    assert cell.task_id == t
    assert cell.has_warnings
    assert cell.last_success_version is None


def test_tenants_have_cells_of_their_own(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        space_id, web = _project(s, "Web")
        r1 = _release(s, space_id, web, "1.0.0")
        releases.record_deployment(s, release_id=r1, environment_id="prod", state="success")
        releases.record_deployment(
            s, release_id=r1, environment_id="prod", state="failed", tenant_id="acme"
        )
    with sessions.begin() as s:
        found = sorted((c.tenant_id or "", c.state.value) for c in dashboard.cells(s, space_id))
    assert found == [("", "success"), ("acme", "failed")]


def test_deleting_a_release_rebuilds_the_cells_from_what_is_left(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as s:
        space_id, web = _project(s, "Web")
        r1 = _release(s, space_id, web, "1.0.0")
        r2 = _release(s, space_id, web, "2.0.0")
        releases.record_deployment(s, release_id=r1, environment_id="dev", state="success")
        releases.record_deployment(s, release_id=r2, environment_id="dev", state="failed")
        releases.record_deployment(s, release_id=r2, environment_id="test", state="success")
    with sessions.begin() as s:
        releases.delete(s, r2)
    with sessions.begin() as s:
        found = [
            (c.environment_id, c.release_version, c.state) for c in dashboard.cells(s, space_id)
        ]
        rows = s.scalar(select(func.count()).select_from(DashboardCell))
    assert found == [("dev", "1.0.0", TaskState.SUCCESS)]
    assert rows == 1
    with sessions.begin() as s:
        r3 = _release(s, space_id, web, "3.0.0")
        releases.record_deployment(s, release_id=r3, environment_id="dev", state="success")
        # 1.0.0 is no longer shown: deleting it leaves the cell as it is, without a rebuild.
        assert not dashboard.shows_release(s, space_id, web, r1)
        releases.delete(s, r1)
        (cell,) = dashboard.cells(s, space_id)
        assert (cell.release_version, cell.state) == ("3.0.0", TaskState.SUCCESS)
        releases.delete(s, r3)
        assert dashboard.cells(s, space_id) == []


def test_cells_of_another_space_stay_out(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        space_id, web = _project(s, "Web")
        other = doc_store.create_space(s, "Other")
        releases.record_deployment(
            s, release_id=_release(s, space_id, web, "1.0.0"), environment_id="dev", state="success"
        )
        assert dashboard.cells(s, other.id) == []
        assert len(dashboard.cells(s, space_id)) == 1


def test_the_migration_fills_the_cells_from_existing_history(engine: Engine) -> None:
    sessions = session_maker(engine)
    with sessions.begin() as s:
        space_id, web = _project(s, "Web")
        r1 = _release(s, space_id, web, "1.0.0")
        r2 = _release(s, space_id, web, "2.0.0")
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0011")
    with engine.begin() as connection:
        # As a server of revision 0011 recorded them: a success, then a failure, to Dev.
        for n, (release, state) in enumerate(((r1, "success"), (r2, "failed"))):
            connection.execute(
                text(
                    "INSERT INTO deployments (id, release_id, environment_id, tenant_id,"
                    " task_id, state, created_ms, finished_ms)"
                    " VALUES (:id, :r, 'dev', NULL, NULL, :s, :at, :at)"
                ),
                {"id": f"{n}" * 32, "r": release, "s": state, "at": 100 + n},
            )
    migrate(engine)
    with sessions.begin() as s:
        (cell,) = dashboard.cells(s, space_id)
    assert (cell.release_version, cell.state, cell.last_success_version) == (
        "2.0.0",
        TaskState.FAILED,
        "1.0.0",
    )
    assert (cell.created_ms, cell.last_success_ms) == (101, 100)
