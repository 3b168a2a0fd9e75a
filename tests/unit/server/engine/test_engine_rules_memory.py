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

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.encryption import Encryptor
from cuttle.server.engine.script_run import RunSettings
from cuttle.server.model import documents as d
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


def _step(body: str, **options: object) -> d.Step:
    action_options = {k: v for k, v in options.items() if k in ("retries", "retry_delay_seconds")}
    step_options = {k: v for k, v in options.items() if k == "window_size"}
    return d.Step(
        name="Deploy",
        target_tags=["web"],
        actions=[
            d.Action(
                name="Run",
                type="run_script",
                script=d.Script(syntax="bash", body=body),
                **action_options,  # type: ignore[arg-type]
            )
        ],
        **step_options,  # type: ignore[arg-type]
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
