"""Acquire packages on in-memory Tentacles: bounded by MaxParallelism, then deployed."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.encryption import Encryptor
from cuttle.server.engine import deployment
from cuttle.server.engine.package_acquisition import AcquisitionOutcome
from cuttle.server.engine.script_run import RunSettings
from cuttle.server.model import documents as d
from cuttle.server.packages.feed import PackageFeed, PushEnd, PushHeader
from cuttle.server.store import documents as doc_store
from cuttle.server.store.transactions import Transactions
from tests.fakes.clock import FakeClock
from tests.fakes.memory_tentacle import MemoryFleet
from tests.unit.server.engine.memory_deployments import run_deployment, store_deployment

pytestmark = pytest.mark.timeout(60)

MACHINES = [f"web-{n:02}" for n in range(1, 6)]


def _package() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Deploy.sh", 'echo "deployed in $(basename "$PWD")"\n')
        archive.writestr("data.bin", os.urandom(300_000))
    return buffer.getvalue()


async def _stream(data: bytes) -> AsyncIterator[bytes | PushEnd]:
    yield data
    yield PushEnd(hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("width", [1, 2])
def test_acquisition_is_bounded_by_max_parallelism_and_the_package_then_deploys(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    width: int,
) -> None:
    encryptor = Encryptor(os.urandom(32))
    with sessions.begin() as session:
        doc_store.ensure_space(session)
    tx = Transactions(sessions)
    feed = PackageFeed(tx, tmp_path / "feed")
    data = _package()
    asyncio.run(feed.start())
    asyncio.run(
        feed.push(
            PushHeader(space="", file_name="web.1.0.0.zip", size=len(data)), _stream(data), "ci"
        )
    )
    step = d.Step(
        name="Deploy",
        target_tags=["web"],
        actions=[
            d.Action(
                name="Deploy web",
                type="deploy_package",
                package=d.PackageReference(package_id="web"),
            )
        ],
    )
    variables = [d.Variable(name="Octopus.Acquire.MaxParallelism", value=str(width))]
    task_id = store_deployment(sessions, encryptor, [step], MACHINES, variables)

    # The real acquire, counted: how many machines acquire at the same time.
    real = deployment.acquire
    inside = 0
    most = 0

    async def counted(*args: Any, **kwargs: Any) -> AcquisitionOutcome:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        try:
            await asyncio.sleep(0.05)  # long enough for any other acquisition to overlap
            return await real(*args, **kwargs)
        finally:
            inside -= 1

    monkeypatch.setattr(deployment, "acquire", counted)
    fleet = MemoryFleet(tmp_path / "agents")

    async def main() -> Any:
        try:
            for name in MACHINES:
                await fleet.add(name)
            return await run_deployment(
                sessions,
                encryptor,
                fleet,
                FakeClock(),
                task_id,
                RunSettings(agent_lost_after=600.0),
                packages=feed,
            )
        finally:
            await fleet.close()

    try:
        ran = asyncio.run(main())
    finally:
        tx.close()
    assert ran.task.state == "success", [(n.name, n.state, n.reason) for n in ran.task.nodes]
    assert most == width
    acquire_step = ran.task.nodes[0]
    assert (acquire_step.name, acquire_step.state) == ("Acquire packages", "success")
    for name in MACHINES:
        deployed = tmp_path / "agents" / name / "Applications" / "Dev" / "web" / "1.0.0"
        assert (deployed / "Deploy.sh").is_file()
