"""Steps without target tags run on the server's built-in worker, never as the server's user.

The worker is a real Tentacle the server starts in `<home>/worker` when a step first needs it;
its scripts run as the unprivileged `builtin_worker_user`, so they cannot read the server's
master key. Their output variables reach later steps on machines like any other. Switched off,
the same deployment is refused at deploy time, saying why.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
from pathlib import Path

import pytest

from tests.integration.harness.cluster import Cluster
from tests.integration.harness.tasks import log_lines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WORKER_USER = "cuttle-worker"

MODEL = """
environments:
  - name: Dev
lifecycles:
  - name: Only Dev
    phases:
      - name: Development
        optional_environments: [Dev]
projects:
  - name: Migrations
    lifecycle: Only Dev
    channels:
      - name: Default
        is_default: true
    process:
      steps:
        - name: Migrate
          actions:
            - name: Migrate
              type: run_script
              script:
                body: |
                  echo "worker user $(id -un)"
                  cat "MASTER_KEY" >/dev/null 2>&1 && echo "key readable" || echo "key refused"
                  echo "on #{Octopus.Machine.Name}"
                  set_octopusvariable "Schema" "v42"
        - name: Web
          target_tags: [web-server]
          actions:
            - name: Use
              type: run_script
              script:
                body: |
                  echo "schema #{Octopus.Action[Migrate].Output.Schema} on #{Octopus.Machine.Name}"
"""


def _needs_root() -> None:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("the built-in worker runs scripts as another user: needs root and useradd")


def _deploy(cluster: Cluster, tmp_path: Path, **settings: object) -> tuple[int, str, str]:
    server = cluster.start_server(**settings)
    cluster.add_tentacle("web-01", "listening", environments=("Dev",), roles=("web-server",))
    model = tmp_path / "model.yaml"
    model.write_text(MODEL.replace("MASTER_KEY", str(server.home / "master.key")))
    server.cli("apply", "-f", str(model), check=True)
    server.cli("release", "create", "--project", "Migrations", "--version", "1.0.0", check=True)
    run = server.cli(
        "deploy",
        "--project",
        "Migrations",
        "--release",
        "1.0.0",
        "--environment",
        "Dev",
        "--wait",
        "--wait-timeout",
        "120",
        "--output",
        "json",
        timeout=150,
    )
    return run.returncode, run.stdout, run.stderr


def test_a_step_without_target_tags_runs_on_the_worker_as_its_own_user(
    cluster: Cluster, tmp_path: Path
) -> None:
    _needs_root()
    code, out, err = _deploy(cluster, tmp_path)
    assert code == 0, out + err
    task_id = json.loads(out.splitlines()[-1])["id"]
    lines = log_lines(cluster.server, task_id)
    pwd.getpwnam(WORKER_USER)  # made by `cuttle-server init`
    assert f"worker user {WORKER_USER}" in lines
    assert "key refused" in lines
    assert "key readable" not in lines
    assert "on built-in-worker" in lines
    assert "schema v42 on web-01" in lines
    worker_home = cluster.server.home / "worker"
    assert (worker_home / "tentacle.json").exists()
    assert worker_home.stat().st_mode & 0o077 == 0


def test_with_the_worker_switched_off_such_a_deployment_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    code, out, err = _deploy(cluster, tmp_path, builtin_worker=False)
    assert code != 0
    assert (
        "step 'Migrate' has no target tags, so it runs on the server's built-in worker, which "
        "is not available: the built-in worker is switched off"
    ) in err
    assert not (cluster.server.home / "worker").exists()
