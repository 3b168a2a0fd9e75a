"""Scripts on listening and polling Tentacles: output, variables, masking, artifacts, status."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness.cluster import BIN, Cluster

pytestmark = pytest.mark.integration

BASH = r"""
echo "hello from $(get_octopusvariable "Octopus.Machine.Name")"
set_octopusvariable "Color" "blue"
set_octopusvariable "Password" "s3cr3t-Pa55word" "True"
echo "leaking s3cr3t-Pa55word on purpose"
echo "##octopus[stdout-verbose]"
echo "a verbose line"
echo "##octopus[stdout-default]"
printf 'report for %s\n' "$(get_octopusvariable "Octopus.Machine.Name")" > report.txt
new_octopusartifact report.txt
"""

PYTHON = """
import sys
print("python", sys.version_info[0], get_octopusvariable("Octopus.Machine.Name"))
set_octopusvariable("Answer", "42")
set_octopusvariable("Token", "tok-9f8e7d6c5b", True)
print("token is tok-9f8e7d6c5b")
"""


def _events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("style", ["listening", "polling"])
def test_bash_and_python_scripts_report_output_variables_and_artifacts(
    cluster: Cluster, style: str, tmp_path: Path
) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", style)

    run = server.cli("script", "run", "--machine", "web-01", "--syntax", "bash", "--", BASH)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "web-01: hello from web-01" in run.stdout
    assert "web-01: a verbose line" in run.stdout
    assert "s3cr3t-Pa55word" not in run.stdout + run.stderr
    assert "web-01: leaking ******** on purpose" in run.stdout
    assert "##octopus[" not in run.stdout

    tasks = server.cli_json("task", "list")
    task = server.cli_json("task", "show", tasks[0]["id"])
    (target,) = task["targets"]
    outputs = {v["name"]: v for v in target["output_variables"]}
    assert outputs["Color"]["value"] == "blue"
    assert outputs["Password"]["sensitive"] is True
    assert outputs["Password"]["value"] == "********"
    (artifact,) = target["artifacts"]
    assert artifact["name"] == "report.txt"
    saved = tmp_path / "report.txt"
    server.cli(
        "artifact", "download", task["id"], "web-01", "report.txt", "-o", str(saved), check=True
    )
    assert saved.read_text() == "report for web-01\n"

    script = tmp_path / "check.py"
    script.write_text(PYTHON)
    run = server.cli(
        "script", "run", "--machine", "web-01", "--syntax", "python", "--file", str(script)
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "web-01: python 3 web-01" in run.stdout
    assert "web-01: token is ********" in run.stdout
    assert "tok-9f8e7d6c5b" not in run.stdout + run.stderr


def test_script_runs_on_every_matching_machine_and_names_the_failures(cluster: Cluster) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", "listening", roles=("web",))
    cluster.add_tentacle("web-02", "polling", roles=("web",))
    cluster.add_tentacle("db-01", "polling", roles=("db",))

    body = (
        'name="$(get_octopusvariable Octopus.Machine.Name)"; echo "on $name"; [ "$name" != web-02 ]'
    )
    run = server.cli("script", "run", "--environment", "Dev", "--role", "web", "--", body)
    assert run.returncode == 1
    assert "web-01: on web-01" in run.stdout
    assert "web-02: on web-02" in run.stdout
    assert "db-01" not in run.stdout
    assert "Failed on: web-02" in run.stderr

    events = _events(
        server.cli("script", "run", "--role", "db", "--output", "json", "--", "echo fine").stdout
    )
    finished = [e for e in events if "finished" in e]
    assert finished
    last = finished[-1]["finished"]
    assert isinstance(last, dict)
    assert last["state"] == "success"


def test_sensitive_input_variable_is_masked_and_not_on_the_command_line(cluster: Cluster) -> None:
    server = cluster.start_server()
    cluster.add_tentacle("web-01", "polling")
    env_value = "pw-from-env-7781"
    result = subprocess.run(
        [
            str(BIN / "cuttle"),
            "script",
            "run",
            "--machine",
            "web-01",
            "--sensitive-variable",
            "DbPassword=DB_PASSWORD",
            "--",
            'echo "password: $(get_octopusvariable DbPassword)"',
        ],
        capture_output=True,
        text=True,
        env={**server.cli_env(), "DB_PASSWORD": env_value},
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "web-01: password: ********" in result.stdout
    assert env_value not in result.stdout + result.stderr
