"""Deployments for engine unit tests: stored as the server stores them, run on memory Tentacles.

`store_deployment` goes the product's way: a project document with the test's process, a
release of it, machines registered in Dev with the role `web`, then `deployments.prepare` and
`deployments.create` plan and store the task tree. `run_deployment` runs it with the real
`TaskRunner` over a `MemoryFleet` (tests/fakes/memory_tentacle.py: real scripts, no network)
and a `FakeClock` that jumps over the engine's timed waits, and returns the task once ended.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.comms.registry import Connections
from cuttle.server.domain.task_states import FINISHED_TASK_STATES
from cuttle.server.encryption import Encryptor
from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.engine.runner import TaskRunner
from cuttle.server.engine.script_run import RunSettings
from cuttle.server.model import deployments
from cuttle.server.model import documents as d
from cuttle.server.model.kinds import kind
from cuttle.server.model.releases import Releases
from cuttle.server.model.repository import ModelRepository
from cuttle.server.packages.feed import PackageFeed
from cuttle.server.store import documents as doc_store
from cuttle.server.store import machines as machine_store
from cuttle.server.store import tasks
from cuttle.server.store.records import TaskRecord
from cuttle.server.store.transactions import Transactions
from tests.fakes.clock import FakeClock
from tests.fakes.memory_tentacle import MemoryFleet
from tests.unit.server.machine_rows import PLACEHOLDER_PEM

# Real-time bound of one deployment run in these tests (virtual time is not bounded).
RUN_BOUND_SECONDS = 20.0


def store_deployment(
    sessions: sessionmaker[Session],
    encryptor: Encryptor,
    steps: Sequence[d.Step],
    machines: Sequence[str],
    variables: Sequence[d.Variable] = (),
) -> str:
    """Store project Web with these steps, release 1.0.0 and its deployment to Dev; the task id."""
    with sessions.begin() as session:
        space, _ = doc_store.ensure_space(session)
        repo = ModelRepository(session, space, encryptor, actor="alice")
        repo.ensure_defaults()
        if repo.find_id("environment", "Dev") is None:
            repo.create(kind("environment"), d.Environment(name="Dev"))
        for name in machines:
            machine_store.add(
                session,
                name=name,
                comms_style="listening",
                endpoint="127.0.0.1:1",  # never dialled: the fleet answers for it
                thumbprint=hashlib.sha256(name.encode()).hexdigest().upper(),
                certificate_pem=PLACEHOLDER_PEM,
                environments=("Dev",),
                roles=("web",),
            )
        repo.create(
            kind("project"),
            d.Project(name="Web", process=d.Process(steps=list(steps)), variables=list(variables)),
        )
        releases = Releases(repo, "alice")
        releases.create("Web", "1.0.0", "", "")
        request = deployments.DeploymentRequest(project="Web", release="1.0.0", environment="Dev")
        prepared = deployments.prepare(releases, repo, request)
        return deployments.create(session, prepared, request, encryptor, space.id).id


@dataclass
class Ran:
    """A deployment run to its end, and what it cost."""

    task: TaskRecord
    real_seconds: float
    virtual_seconds: float


async def run_deployment(
    sessions: sessionmaker[Session],
    encryptor: Encryptor,
    fleet: MemoryFleet,
    clock: FakeClock,
    task_id: str,
    settings: RunSettings,
    meanwhile: Callable[[Watch], Coroutine[Any, Any, Any]] | None = None,
    packages: PackageFeed | None = None,
) -> Ran:
    """Run the stored task with the TaskRunner until it ends; `meanwhile` runs alongside."""
    tx = Transactions(sessions)
    signals = TaskSignals()
    # MemoryFleet answers what the engine asks of Connections (client, connected).
    runner = TaskRunner(tx, cast(Connections, fleet), signals, settings, encryptor=encryptor)
    runner.clock = clock
    runner.packages = packages
    began, virtual_began = time.monotonic(), clock.now()
    side: asyncio.Task[Any] | None = None
    try:
        async with clock.autojump(), asyncio.timeout(RUN_BOUND_SECONDS):
            with signals.subscribe(task_id) as changes:
                if meanwhile is not None:
                    side = asyncio.create_task(
                        meanwhile(Watch(tx, signals, task_id, runner, clock))
                    )
                await runner.start()
                while True:
                    seen = changes.version
                    task = await tx.read(lambda s: tasks.get(s, task_id))
                    if task.state in FINISHED_TASK_STATES:
                        break
                    # Every change of the task wakes this (the test's wait is real time).
                    await changes.wait_past(seen, RUN_BOUND_SECONDS)
            if side is not None:
                await side
    finally:
        if side is not None and not side.done():
            side.cancel()
        await runner.stop()
        tx.close()
    return Ran(task, time.monotonic() - began, clock.now() - virtual_began)


@dataclass
class Watch:
    """What a test acting during a run sees: store, change signals, runner and clock."""

    tx: Transactions
    signals: TaskSignals
    task_id: str
    runner: TaskRunner
    clock: FakeClock

    async def until(self, check: Callable[[TaskRecord], bool]) -> TaskRecord:
        """Wait (real time, bounded) until the stored task satisfies `check`; woken by changes."""
        task_id = self.task_id
        with self.signals.subscribe(task_id) as changes:
            async with asyncio.timeout(RUN_BOUND_SECONDS):
                while True:
                    seen = changes.version
                    task = await self.tx.read(lambda s: tasks.get(s, task_id))
                    if check(task):
                        return task
                    await changes.wait_past(seen, RUN_BOUND_SECONDS)
