"""The engine's rules, fast: real deployments on in-memory Tentacles, timed waits in virtual time.

Each test stores a deployment the product's way and runs it with the real TaskRunner; scripts
really run (bash, on memory Tentacles in temporary homes), and the engine's waits (retry
pauses, a lost agent) pass in virtual time, so a rule about minutes costs well under a second.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.comms.registry import Connections
from cuttle.server.domain.task_states import FINISHED_TASK_STATES
from cuttle.server.encryption import Encryptor
from cuttle.server.engine.cancel_delivery import CancelDelivery, CancelDeliverySettings
from cuttle.server.engine.script_run import RunSettings
from cuttle.server.model import documents as d
from cuttle.server.store import pending_cancels, tasks
from cuttle.server.store.pending_cancels import PendingCancelRecord
from cuttle.server.store.records import TaskRecord
from tests.fakes.clock import FakeClock
from tests.fakes.memory_tentacle import MemoryFleet
from tests.unit.server.engine.memory_deployments import (
    Ran,
    Watch,
    run_deployment,
    store_deployment,
)

pytestmark = pytest.mark.timeout(60)

# The product's defaults for the rules under test; only virtual time makes them cheap.
SETTINGS = RunSettings(agent_lost_after=600.0, reconnect_max_delay=10.0)


@pytest.fixture
def encryptor() -> Encryptor:
    return Encryptor(os.urandom(32))


def _step(
    body: str, *, retries: int = 0, retry_delay_seconds: int = 15, window_size: int | None = None
) -> d.Step:
    """Step Deploy on the machines tagged web: one bash action, Run."""
    return d.Step(
        name="Deploy",
        target_tags=["web"],
        window_size=window_size,
        actions=[
            d.Action(
                name="Run",
                type="run_script",
                script=d.Script(syntax="bash", body=body),
                retries=retries,
                retry_delay_seconds=retry_delay_seconds,
            )
        ],
    )


def _deploy(
    sessions: sessionmaker[Session],
    encryptor: Encryptor,
    root: Path,
    step: d.Step,
    machines: list[str],
    meanwhile: Callable[[Watch, MemoryFleet], Awaitable[object]] | None = None,
) -> tuple[Ran, FakeClock, dict[str, list[str]]]:
    """Store and run the deployment; what ended, the clock, and each agent's calls.

    `meanwhile` acts during the run (on the fleet, say), seeing the task as it is stored.
    """
    task_id = store_deployment(sessions, encryptor, [step], machines)
    clock = FakeClock()
    fleet = MemoryFleet(root / "agents")

    async def alongside(watch: Watch) -> object:
        return None if meanwhile is None else await meanwhile(watch, fleet)

    async def main() -> tuple[Ran, dict[str, list[str]]]:
        try:
            for name in machines:
                await fleet.add(name)
            ran = await run_deployment(
                sessions, encryptor, fleet, clock, task_id, SETTINGS, alongside
            )
            return ran, {t.name: list(t.calls) for t in fleet}
        finally:
            await fleet.close()

    ran, calls = asyncio.run(main())
    return ran, clock, calls


def _machine_nodes(task: TaskRecord) -> dict[str, tuple[str, str]]:
    return {n.name: (n.state.value, n.reason or "") for n in task.machine_nodes}


def test_an_action_retried_twice_runs_three_times_in_virtual_time(
    sessions: sessionmaker[Session], encryptor: Encryptor, tmp_path: Path
) -> None:
    counter = tmp_path / "attempts"
    # Fails on its first two runs, succeeds on the third.
    body = (
        f"n=$(( $(cat '{counter}' 2>/dev/null || echo 0) + 1 )); echo $n > '{counter}'\n"
        'echo "attempt $n"; [ "$n" -ge 3 ]'
    )
    step = _step(body, retries=2, retry_delay_seconds=15)
    ran, clock, calls = _deploy(sessions, encryptor, tmp_path, step, ["web-01"])

    assert ran.task.state == "success", _machine_nodes(ran.task)
    (node,) = ran.task.machine_nodes
    assert node.state == "success"
    assert [(r.state.value, r.exit_code) for r in node.runs] == [
        ("complete", 1),
        ("complete", 1),
        ("complete", 0),
    ]
    assert counter.read_text() == "3\n"
    # Two pauses of 15 s each passed in virtual time, not in real time.
    assert ran.virtual_seconds >= 30
    assert ran.real_seconds < 15, f"took {ran.real_seconds:.1f}s of real time"
    # Each run started once, through its watch (the transport's reconnects multiply nothing).
    assert calls["web-01"].count("WatchScript") == 3


def test_a_rolling_step_stops_at_the_first_failing_machine(
    sessions: sessionmaker[Session], encryptor: Encryptor, tmp_path: Path
) -> None:
    body = 'echo "on #{Octopus.Machine.Name}"; [ "#{Octopus.Machine.Name}" != web-02 ]'
    step = _step(body, window_size=1)
    ran, _, calls = _deploy(sessions, encryptor, tmp_path, step, ["web-01", "web-02", "web-03"])

    assert ran.task.state == "failed"
    assert _machine_nodes(ran.task) == {
        "web-01": ("success", ""),
        "web-02": ("failed", ""),
        "web-03": ("skipped", "an earlier machine failed"),
    }
    # No further machine started: web-03's agent was never asked anything.
    assert calls["web-03"] == []
    assert "WatchScript" in calls["web-02"]


def test_an_agent_lost_mid_script_ends_result_unknown_after_agent_lost_after(
    sessions: sessionmaker[Session], encryptor: Encryptor, tmp_path: Path
) -> None:
    async def lose_the_agent_once_it_runs(watch: Watch, fleet: MemoryFleet) -> None:
        # The first line is stored: the script runs on web-01. Then the network breaks.
        await watch.until(
            lambda t: any(r.last_sequence > 0 for n in t.machine_nodes for r in n.runs)
        )
        fleet["web-01"].go_away("timed out")

    step = _step("echo started; sleep 120; echo never")
    ran, _, calls = _deploy(
        sessions, encryptor, tmp_path, step, ["web-01"], lose_the_agent_once_it_runs
    )

    assert ran.task.state == "failed"
    (node,) = ran.task.machine_nodes
    assert node.state == "result_unknown"
    (run,) = node.runs
    assert run.state == "result_unknown"
    assert "lost contact for 600s (timed out)" in run.message
    assert "the last line stored is number 1" in run.message
    # Ten minutes of retrying passed in virtual time; the engine kept asking all along.
    assert ran.virtual_seconds >= 600
    assert ran.real_seconds < 15, f"took {ran.real_seconds:.1f}s of real time"
    assert calls["web-01"].count("WatchScript") > 10


def _a_line_is_stored(task: TaskRecord) -> bool:
    return any(r.last_sequence > 0 for n in task.machine_nodes for r in n.runs)


def test_an_agent_restarted_mid_script_ends_result_unknown_at_once(
    sessions: sessionmaker[Session], encryptor: Encryptor, tmp_path: Path
) -> None:
    async def restart_the_agent_once_it_runs(watch: Watch, fleet: MemoryFleet) -> None:
        await watch.until(_a_line_is_stored)
        await fleet["web-01"].restart()

    step = _step("echo started; sleep 120; echo never")
    ran, _, calls = _deploy(
        sessions, encryptor, tmp_path, step, ["web-01"], restart_the_agent_once_it_runs
    )

    (node,) = ran.task.machine_nodes
    (run,) = node.runs
    assert (ran.task.state, node.state, run.state) == ("failed", "result_unknown", "result_unknown")
    # The restarted agent says what became of the script: nobody waits agent_lost_after.
    assert "Tentacle restarted while the script was running" in run.message
    assert ran.virtual_seconds < SETTINGS.agent_lost_after
    # Re-attached by its ticket, never started again under another one.
    assert calls["web-01"].count("WatchScript") >= 2


def test_a_cancel_that_times_out_is_kept_pending_and_delivered_a_retry_interval_later(
    sessions: sessionmaker[Session], encryptor: Encryptor, tmp_path: Path
) -> None:
    delivery_settings = CancelDeliverySettings(retry_interval=SETTINGS.cancel_retry_interval)
    seen: dict[str, object] = {}

    async def cancel_with_the_agent_slow(watch: Watch, fleet: MemoryFleet) -> None:
        await watch.until(_a_line_is_stored)
        # The cancel never reaches the agent: the call times out once.
        fleet["web-01"].time_out_next("CancelScript", delivered=False)
        await watch.runner.cancel(watch.task_id, "stop the rollout")
        ended = await watch.until(lambda t: t.state in FINISHED_TASK_STATES)
        (node,) = ended.machine_nodes
        (run,) = node.runs
        seen["ended"], seen["message"] = ended.state, run.message
        task_id = watch.task_id
        (seen["kept"],) = await watch.tx.read(
            lambda s: pending_cancels.list_pending(s, task_id=task_id)
        )
        seen["wall_ms"] = watch.clock.wall_ms()
        # Not due yet; due after the retry interval, in virtual time.
        delivery = CancelDelivery(
            watch.tx, cast(Connections, fleet), watch.signals, delivery_settings, watch.clock
        )
        seen["early"] = await delivery.deliver_due()
        agent = await fleet.client("web-01")
        seen["still_running"] = (await agent.get_status(run.ticket)).state
        await watch.clock.advance(SETTINGS.cancel_retry_interval)
        await delivery.deliver_due()
        # Killed, its output fetched, then completed: the agent keeps nothing of it.
        seen["after"] = (fleet["web-01"].home / "tickets" / run.ticket).exists()

    step = _step("echo started; sleep 120; echo never")
    ran, _, calls = _deploy(
        sessions, encryptor, tmp_path, step, ["web-01"], cancel_with_the_agent_slow
    )

    assert seen["ended"] == "cancelled"
    assert "cancel pending: it will be delivered when web-01 is back" in str(seen["message"])
    # No agent_lost_after for a cancel; the retry is due one cancel_retry_interval later.
    kept = seen["kept"]
    assert isinstance(kept, PendingCancelRecord)
    assert kept.next_attempt_ms - int(str(seen["wall_ms"])) == 15_000
    assert seen["early"] == pytest.approx(SETTINGS.cancel_retry_interval, abs=0.1)
    assert seen["still_running"] == "running"
    # Delivered when due: the agent killed the script, the run says so, nothing stays pending.
    assert seen["after"] is False
    with sessions() as session:
        (node,) = tasks.get(session, ran.task.id).machine_nodes
    (run,) = node.runs
    assert node.state == "result_unknown"
    assert run.message.startswith(
        "the cancel was delivered when web-01 was back: the script was killed"
    )
    with sessions() as session:
        assert pending_cancels.list_pending(session) == []
    assert calls["web-01"].count("CancelScript") == 2
    assert ran.virtual_seconds < SETTINGS.agent_lost_after
