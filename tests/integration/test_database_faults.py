"""A database that is locked, or a disk that fills, never leaves a task running with nobody on it.

Another process holds SQLite's write lock for longer than the server's busy timeout while a
script prints: the engine's transactions wait it out (retried with backoff in the store), and
the task finishes by itself once the lock is gone, every line stored exactly once — no restart.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness.cluster import BIN, Cluster, wait_for
from tests.integration.harness.tasks import finished_task, log_lines, newest_task_id

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

# Longer than the server's SQLite busy timeout (5 s), so every write in that window fails at
# least once and must be retried; the report held it for 15 s.
LOCK_SECONDS = 12.0


@contextlib.contextmanager
def _write_lock(db: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(str(db), timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def test_a_locked_database_delays_a_running_task_but_never_hangs_it(cluster: Cluster) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("lock-01", "listening")
    marker = cluster.root / "release-the-script"
    # Prints until the marker exists, then one last line: the lock lands mid-output.
    body = (
        "i=0\n"
        f"while [ ! -e {marker} ]; do\n"
        "  i=$((i+1)); echo line $i\n"
        "  if [ $((i % 500)) = 0 ]; then sleep 0.05; fi\n"
        "done\n"
        "echo final $i\n"
    )
    run = subprocess.Popen(
        [str(BIN / "cuttle"), "script", "run", "--machine", "lock-01", "--", body],
        env=server.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        task_id = wait_for(lambda: newest_task_id(server), 30, "the task to be listed")
        wait_for(lambda: len(log_lines(server, task_id)) > 1000, 30, "output to be stored")
        with _write_lock(server.home / "cuttle.db"):
            # The script ends while the server cannot write a thing.
            marker.touch()
            threading.Event().wait(LOCK_SECONDS)
        task = wait_for(lambda: finished_task(server, task_id), 90, "the task to finish")
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
        run.wait()
    assert task["state"] == "success", task
    lines = log_lines(server, task_id)
    numbered = [int(m.group(1)) for line in lines if (m := re.fullmatch(r"line (\d+)", line))]
    final = [line for line in lines if line.startswith("final ")]
    # Every line exactly once, in order, and the last one too.
    assert numbered == list(range(1, len(numbered) + 1)), (len(numbered), numbered[-3:])
    assert final == [f"final {len(numbered)}"]
    assert run.returncode == 0, out.decode() + err.decode()
    assert "transaction_retrying" in (server.home / "server.log").read_text()
