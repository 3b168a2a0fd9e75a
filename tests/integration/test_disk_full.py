"""A Tentacle whose disk fills under a chatty script: a clear reason, and nothing journaled lost.

The Tentacle's home is a small tmpfs mounted inside the test, so its journal runs out of space
while the script still prints. The script must be stopped (running on with output nobody can
keep would lose it silently, and an unread pipe would block it forever), the reason must say
so, every line journaled before must reach the server exactly once, and the Tentacle must go
on running scripts once space is back.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from cuttle.server.store import log_packing
from tests.integration.harness.cluster import Cluster, Server, wait_for
from tests.integration.harness.tasks import finished_task, newest_task_id

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

STDOUT = 1  # LogSource.STDOUT in the store


def _mount_small_tmpfs(path: Path) -> None:
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as a full disk needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here to fill: {done.stderr.strip()}")


def _stored_stdout(server: Server, task_id: str) -> list[bytes]:
    """The task's stdout lines in the server's store, in order (read beside the server: WAL)."""
    conn = sqlite3.connect(f"file:{server.home / 'cuttle.db'}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT lines FROM task_log_chunks WHERE task_id = ? ORDER BY first_position",
            (task_id,),
        ).fetchall()
    finally:
        conn.close()
    return [
        line.text
        for (data,) in rows
        for line in log_packing.unpack(bytes(data))
        if line.source == STDOUT
    ]


@pytest.mark.parametrize("style", ["listening", "polling"])
def test_a_full_disk_stops_the_script_with_a_reason_and_keeps_what_was_journaled(
    cluster: Cluster, style: str
) -> None:
    home = cluster.root / "full-01"
    _mount_small_tmpfs(home)
    try:
        server = cluster.start_server()
        cluster.add_tentacle("full-01", style)
        run = server.cli(
            "script", "run", "--machine", "full-01", "--", "seq 1 50000000", timeout=120
        )
        assert run.returncode != 0, run.stdout + run.stderr
        task_id = wait_for(lambda: newest_task_id(server), 20, "the task to be listed")
        task = wait_for(lambda: finished_task(server, task_id), 60, "the task to finish")
        (target,) = task["targets"]
        assert target["state"] == "cancelled", target
        assert "could not journal the script's output" in target["message"], target
        assert "No space left on device" in target["message"], target

        stored = _stored_stdout(server, task_id)
        # What the disk held (a batch that did not fit is refused whole) arrived, once, in order.
        assert stored, "nothing was journaled before the disk filled"
        assert stored == [str(n).encode() for n in range(1, len(stored) + 1)]

        # The ticket is completed and deleted, so the space comes back: work runs again.
        tickets = home / "tickets"
        wait_for(
            lambda: not any(p.is_dir() for p in tickets.iterdir()),
            30,
            "the finished ticket to be deleted",
            interval=0.1,
        )
        again = server.cli("script", "run", "--machine", "full-01", "--", "echo back", timeout=60)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "back" in again.stdout
    finally:
        cluster.stop()
        with contextlib.suppress(OSError):
            subprocess.run(["umount", "-l", str(home)], check=False, capture_output=True)
