"""Secrets never leak through output variables: not printed, not listed, not stored in clear.

A script copies a sensitive input into an output variable that is not marked sensitive, and
sets a second output marked sensitive. Neither value may appear in what `cuttle script run`
prints, in `cuttle task show --output json`, or anywhere in the bytes of the SQLite database
(its WAL included): both are stored encrypted, for later steps to read.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.harness.cluster import BIN, Cluster, Server
from tests.integration.harness.tasks import newest_task_id

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _database_bytes(server: Server) -> bytes:
    """Every byte SQLite holds for the server: the main file, its WAL and shared memory."""
    return b"".join(
        path.read_bytes()
        for path in sorted(server.home.glob("cuttle.db*"))
        if isinstance(path, Path) and path.is_file()
    )


@pytest.mark.parametrize("style", ["listening", "polling"])
def test_outputs_holding_or_marked_secret_are_never_shown_or_stored_in_clear(
    cluster: Cluster, style: str, tmp_path: Path
) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", style)
    secret = f"input-secret-{uuid.uuid4().hex}"
    # Made by the script, so that it is not in the script body the task stores; the test
    # reads it from a file the script writes.
    told = tmp_path / "marked-value"
    body = (
        'set_octopusvariable Leaked "$(get_octopusvariable Secret)"\n'
        'marked="marked-secret-$(cat /proc/sys/kernel/random/uuid)"\n'
        f'printf %s "$marked" > {told}\n'
        'set_octopusvariable Marked "$marked" True\n'
        "set_octopusvariable Plain visible\n"
        "echo done\n"
    )
    result = subprocess.run(
        [
            str(BIN / "cuttle"),
            "script",
            "run",
            "--machine",
            "web-01",
            "--sensitive-variable",
            "Secret=THE_SECRET",
            "--",
            body,
        ],
        capture_output=True,
        text=True,
        env={**server.cli_env(), "THE_SECRET": secret},
        timeout=90,
    )
    printed = result.stdout + result.stderr
    assert result.returncode == 0, printed
    marked = told.read_text()
    assert marked.startswith("marked-secret-")
    # The outputs are reported, by name, without their values.
    assert "output Leaked = ********" in printed, printed
    assert "output Marked = ********" in printed, printed
    assert "output Plain = visible" in printed, printed
    assert secret not in printed
    assert marked not in printed

    task_id = newest_task_id(server)
    assert task_id is not None
    shown = server.cli("task", "show", task_id, "--output", "json")
    assert shown.returncode == 0, shown.stderr
    assert secret not in shown.stdout
    assert marked not in shown.stdout
    (target,) = json.loads(shown.stdout)["targets"]
    outputs = {v["name"]: v for v in target["output_variables"]}
    assert outputs["Leaked"]["sensitive"] is True, outputs
    assert outputs["Marked"]["sensitive"] is True, outputs
    assert outputs["Plain"]["value"] == "visible", outputs
    assert not outputs["Plain"].get("sensitive", False), outputs

    stored = _database_bytes(server)
    assert b"visible" in stored, "the database files were not where the test looked"
    assert secret.encode() not in stored
    assert marked.encode() not in stored
