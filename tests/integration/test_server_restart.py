"""A server killed mid-script loses no line, duplicates none, and never reruns the script."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness.cluster import BIN, Cluster, wait_for

pytestmark = pytest.mark.integration

LINES = 10_000


def _log_lines(server_cli_stdout: str) -> list[str]:
    lines: list[str] = []
    for raw in server_cli_stdout.splitlines():
        event = json.loads(raw)
        for line in event.get("lines", {}).get("lines", []):
            lines.append(line["line"]["text"])
    return lines


@pytest.mark.parametrize("style", ["listening", "polling"])
def test_sigkilled_server_recovers_every_line_exactly_once(
    cluster: Cluster, style: str, tmp_path: Path
) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", style)
    runs = tmp_path / "runs.txt"
    # Numbered lines at a steady pace, so the kill lands in the middle of the output.
    body = (
        f'echo run >> "{runs}"\n'
        f'for i in $(seq 1 {LINES}); do echo "line $i"; '
        f"if [ $((i % 500)) -eq 0 ]; then sleep 0.1; fi; done\n"
    )
    runner = subprocess.Popen(
        [str(BIN / "cuttle"), "script", "run", "--machine", "web-01", "--", body],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=server.cli_env(),
    )
    try:
        task_id = wait_for(
            lambda: (server.cli_json("task", "list") or [{}])[0].get("id"), 30, "the task"
        )

        def some_lines_stored() -> bool:
            out = server.cli("task", "log", task_id, "--output", "json", check=True).stdout
            return len(_log_lines(out)) >= 500

        wait_for(some_lines_stored, 30, "the first lines to be stored", interval=0.1)
        server.process.kill()  # type: ignore[union-attr]
    finally:
        runner.kill()
        runner.wait(10)
    server.start()
    if style == "polling":
        cluster.tentacles["web-01"].wait_connected()

    def finished() -> bool:
        task = server.cli_json("task", "show", task_id)
        return task["state"] in ("success", "failed")

    wait_for(finished, 60, "the resumed task to finish", interval=0.25)
    task = server.cli_json("task", "show", task_id)
    assert task["state"] == "success", task
    log = _log_lines(server.cli("task", "log", task_id, "--output", "json", check=True).stdout)
    assert log == [f"line {i}" for i in range(1, LINES + 1)]
    assert runs.read_text() == "run\n", "the script must have run exactly once"
