"""A task's log is bounded: past the limit lines are counted, not stored, across a restart too.

A script prints more than the task's log may hold, in two halves; the server is SIGKILLed
between them. The log keeps the first lines up to the limit, says where the limit was reached,
and at the end says how many lines and bytes were dropped — the count of both server lives,
since it is stored, not held in memory.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness.cluster import BIN, Cluster, wait_for
from tests.integration.harness.tasks import finished_task, log_lines, newest_task_id

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

HALF = 2000
# "line NNNNN" and its newline: 11 bytes a line.
LINE_BYTES = 11
LIMIT = 10 * 1024


@pytest.mark.parametrize("style", ["listening", "polling"])
def test_lines_past_the_limit_are_counted_and_the_count_survives_a_restart(
    cluster: Cluster, style: str, tmp_path: Path
) -> None:
    server = cluster.start_server(task_log_limit_bytes="10KiB")
    cluster.add_tentacle("web-01", style)
    go_on = tmp_path / "go-on"
    body = (
        f'for i in $(seq 1 {HALF}); do printf "line %05d\\n" $i; done\n'
        f"while [ ! -e {go_on} ]; do sleep 0.05; done\n"
        f'for i in $(seq {HALF + 1} {2 * HALF}); do printf "line %05d\\n" $i; done\n'
    )
    run = subprocess.Popen(
        [str(BIN / "cuttle"), "script", "run", "--machine", "web-01", "--", body],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=server.cli_env(),
    )
    try:
        task_id = wait_for(lambda: newest_task_id(server), 30, "the task to be listed")
        wait_for(
            lambda: any("reached its limit" in line for line in log_lines(server, task_id)),
            30,
            "the log to reach its limit",
            interval=0.2,
        )
        assert server.process is not None
        server.process.kill()
    finally:
        run.kill()
        run.wait(10)
    server.start()
    if style == "polling":
        cluster.tentacles["web-01"].wait_connected()
    go_on.touch()
    task = wait_for(lambda: finished_task(server, task_id), 60, "the task to finish", 0.25)
    assert task["state"] == "success", task

    log = log_lines(server, task_id)
    script = [line for line in log if line.startswith("line ")]
    notes = [line for line in log if not line.startswith("line ")]
    kept = LIMIT // LINE_BYTES
    assert script == [f"line {i:05d}" for i in range(1, kept + 1)]
    assert len(notes) == 2, notes
    assert "reached its limit of 10.0 KiB" in notes[0]
    assert log.index(notes[0]) == kept
    dropped = 2 * HALF - kept
    match = re.search(r"(\d+) lines \((\d+) bytes\) of output were dropped", notes[1])
    assert match is not None, notes
    assert (int(match.group(1)), int(match.group(2))) == (dropped, dropped * LINE_BYTES)
    assert log[-1] == notes[1]
