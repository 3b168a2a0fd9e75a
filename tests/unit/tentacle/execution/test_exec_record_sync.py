"""Terminal records are fsynced in batches a moment after they are written, unless completed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cuttle.tentacle.execution import record_sync
from cuttle.tentacle.execution.manager import ScriptManager, StartCommand, Syntax
from cuttle.tentacle.execution.record_sync import RecordSyncer
from cuttle.tentacle.execution.tickets import TicketPaths
from tests.unit.tentacle.execution.scenarios import run_with


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Each batch of fsynced tickets, as ticket directory names (the real fsync still runs)."""
    batches: list[list[str]] = []
    real = record_sync._sync_all

    def spy(batch: dict[str, TicketPaths]) -> list[tuple[str, str]]:
        batches.append(sorted(batch))
        return real(batch)

    monkeypatch.setattr(record_sync, "_sync_all", spy)
    return batches


async def _finish(m: ScriptManager, ticket: str, body: str = "true") -> None:
    await m.start(StartCommand(ticket, body, Syntax.BASH))
    async for _ in m.watch(ticket):
        pass


def test_records_of_scripts_that_end_together_are_synced_in_one_batch(
    tmp_path: Path, synced: list[list[str]]
) -> None:
    async def scenario(m: ScriptManager) -> None:
        await asyncio.gather(*(_finish(m, f"t-batch-{i}") for i in range(3)))
        # Written and visible at once; durable only after the delay.
        assert synced == []
        for i in range(3):
            state = TicketPaths.of(tmp_path, f"t-batch-{i}").state
            assert json.loads(state.read_text())["state"] == "COMPLETE"
        async with asyncio.timeout(10):
            while not synced:  # noqa: ASYNC110 - the batch is what is under test
                await asyncio.sleep(0.01)
        assert synced == [["t-batch-0", "t-batch-1", "t-batch-2"]]

    # Long enough for three started together to end inside it, even on a loaded machine.
    run_with(tmp_path, scenario, record_sync_delay=1.0)


def test_a_ticket_completed_before_its_turn_is_never_synced(
    tmp_path: Path, synced: list[list[str]]
) -> None:
    async def scenario(m: ScriptManager) -> None:
        await _finish(m, "t-sync-kept")
        await _finish(m, "t-sync-gone")
        await m.complete("t-sync-gone")

    # The batch is due only at the stop, which syncs what is still pending.
    run_with(tmp_path, scenario, record_sync_delay=60.0)
    assert synced == [["t-sync-kept"]]


def test_a_clean_stop_syncs_what_is_pending(tmp_path: Path, synced: list[list[str]]) -> None:
    async def scenario(m: ScriptManager) -> None:
        await _finish(m, "t-sync-stop")
        assert synced == []

    run_with(tmp_path, scenario, record_sync_delay=60.0)
    assert synced == [["t-sync-stop"]]


def test_a_failed_sync_is_logged_and_the_rest_of_the_batch_still_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    done: list[str] = []

    def sync_record(paths: TicketPaths) -> None:
        if paths.root.name == "t-bad":
            raise OSError(5, "Input/output error")
        done.append(paths.root.name)

    monkeypatch.setattr(record_sync, "sync_record", sync_record)

    async def scenario() -> None:
        syncer = RecordSyncer(0.0)
        for name in ("t-bad", "t-good"):
            syncer.add(name, TicketPaths.of(tmp_path, name))
        await syncer.flush()
        assert syncer.pending == 0

    asyncio.run(scenario())
    assert done == ["t-good"]
    out = capsys.readouterr().out
    assert "ticket_sync_failed" in out
    assert "t-bad" in out
