"""Shared by the execution tests: a bounded manager scenario, and runs read line by line."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cuttle.tentacle.execution.manager import ScriptManager
from cuttle.tentacle.execution.model import LogLevel, LogRun, LogSource

Scenario = Callable[[ScriptManager], Awaitable[None]]


def run_with(home: Path, scenario: Scenario, **settings: Any) -> None:
    """Run a scenario against a fresh manager on `home` (a "restarted Tentacle"), bounded."""

    async def main() -> None:
        manager = ScriptManager(home, **settings)
        await manager.recover()
        try:
            async with asyncio.timeout(60):
                await scenario(manager)
        finally:
            await manager.close()

    asyncio.run(main())


@dataclass(frozen=True)
class Line:
    """One line of a journaled run, with the sequence the run gives it."""

    sequence: int
    source: LogSource
    level: LogLevel
    text: bytes


def lines_of(runs: tuple[LogRun, ...]) -> list[Line]:
    """Runs line by line; checks each run's count against its text."""
    out: list[Line] = []
    for run in runs:
        texts = run.lines()
        assert len(texts) == run.count, run
        out.extend(Line(run.sequence + i, run.source, run.level, t) for i, t in enumerate(texts))
    return out
