"""The task queue in the store: caps, FIFO, one deployment per project and environment, leases
that a dead node loses to a live one, and two nodes claiming at once never sharing a task."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.domain.task_specs import DeploymentTaskSpec, ScriptTaskSpec
from cuttle.server.domain.task_states import NodeKind, TaskState
from cuttle.server.store import task_queue, tasks
from cuttle.server.store.database import session_maker

SCRIPT = ScriptTaskSpec(syntax="bash", body="true")
LEASE = 30_000


def _script(session: Session, at: int) -> str:
    return tasks.create_script_task(
        session, description="s", spec=SCRIPT, machine_names=["web-01"], created_ms=at
    ).id


def _deployment(session: Session, at: int, environment: str = "env-dev") -> str:
    spec = DeploymentTaskSpec(
        space_id="space",
        deployment_id=f"d{at}",
        project_id="proj-web",
        project_name="Web",
        release_id="rel",
        release_version="1.0.0",
        channel="Default",
        environment_id=environment,
        environment_name=environment,
    )
    plan = [tasks.PlannedNode(NodeKind.STEP, "Step")]
    return tasks.create_task(session, description="d", spec=spec, plan=plan, created_ms=at).id


def test_the_cap_queues_the_rest_oldest_first_and_says_why(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        ids = [_script(session, at) for at in (3, 1, 2)]
    with sessions.begin() as session:
        claimed = task_queue.claim(session, "a", now_ms=100, lease_ms=LEASE, task_cap=2)
    # Oldest first: created at 1 and 2.
    assert claimed.started == (ids[1], ids[2])
    with sessions.begin() as session:
        waiting = tasks.get(session, ids[0])
        running = tasks.get(session, ids[1])
    assert waiting.state == TaskState.QUEUED
    assert waiting.waiting_reason == "waiting for a task slot (2 of 2 busy)"
    assert (running.state, running.owner_node) == (TaskState.RUNNING, "a")
    # A task waiting for a person gives its slot back.
    with sessions.begin() as session:
        tasks.set_state(session, ids[1], TaskState.WAITING)
        again = task_queue.claim(session, "a", now_ms=101, lease_ms=LEASE, task_cap=2)
    assert again.started == (ids[0],)


def test_one_deployment_per_project_and_environment(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        first = _deployment(session, 1)
        second = _deployment(session, 2)
        elsewhere = _deployment(session, 3, environment="env-test")
    with sessions.begin() as session:
        claimed = task_queue.claim(session, "a", now_ms=100, lease_ms=LEASE, task_cap=5)
        blocked = tasks.get(session, second)
    assert claimed.started == (first, elsewhere)
    assert blocked.waiting_reason == f"waiting for task {first} (same project and environment)"
    with sessions.begin() as session:
        tasks.set_state(session, first, TaskState.SUCCESS)
        after = task_queue.claim(session, "a", now_ms=101, lease_ms=LEASE, task_cap=5)
    assert after.started == (second,)


def test_a_dead_nodes_tasks_go_to_a_live_node_once_its_lease_runs_out(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        task_id = _script(session, 1)
        assert task_queue.claim(session, "a", now_ms=0, lease_ms=LEASE, task_cap=5).started
    with sessions.begin() as session:
        # Node a's lease holds: b may not take its task.
        early = task_queue.claim(session, "b", now_ms=LEASE - 1, lease_ms=LEASE, task_cap=5)
        assert early.adopted == ()
        # a renews while alive.
        assert task_queue.heartbeat(
            session, "a", now_ms=LEASE - 1, lease_ms=LEASE, task_cap=5, started_ms=0
        ) == [task_id]
        renewed = task_queue.claim(session, "b", now_ms=LEASE + 1, lease_ms=LEASE, task_cap=5)
        assert renewed.adopted == ()
        # a stops renewing: once its lease ran out, b adopts the task.
        adopted = task_queue.claim(session, "b", now_ms=3 * LEASE, lease_ms=LEASE, task_cap=5)
        assert adopted.adopted == (task_id,)
        assert tasks.get(session, task_id).owner_node == "b"
        nodes = {n.id: n for n in task_queue.nodes(session)}
    assert nodes["a"].tasks == 0
    assert nodes["a"].heartbeat_ms == LEASE - 1


def test_two_nodes_claiming_at_once_never_share_a_task(engine: Engine) -> None:
    sessions = session_maker(engine)
    with sessions.begin() as session:
        ids = {_script(session, at) for at in range(20)}

    def claim(node: str) -> list[str]:
        got: list[str] = []
        for round_ in range(10):
            with sessions.begin() as session:
                got.extend(
                    task_queue.claim(
                        session, node, now_ms=round_, lease_ms=LEASE, task_cap=20
                    ).started
                )
        return got

    with ThreadPoolExecutor(max_workers=2) as pool:
        a, b = pool.map(claim, ["a", "b"])
    assert not set(a) & set(b)
    assert set(a) | set(b) == ids


def test_a_task_queued_past_the_limit_ends_cancelled_saying_why(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        old, fresh = _script(session, 1), _script(session, 5_000)
    with sessions.begin() as session:
        claimed = task_queue.claim(
            session, "a", now_ms=6_000, lease_ms=LEASE, task_cap=0, queue_limit_ms=2_000
        )
        gone, waiting = tasks.get(session, old), tasks.get(session, fresh)
    assert claimed.started == ()
    assert gone.state == TaskState.CANCELLED
    assert "waited in the queue longer than the limit of 2s" in gone.reason
    assert waiting.state == TaskState.QUEUED
    assert waiting.waiting_reason == "waiting for a task slot (0 of 0 busy)"
