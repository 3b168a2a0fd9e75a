"""Operations through the real CLI and server: who may do what to machines and tasks, the audit
trail they leave, honest task listings, and ad-hoc scripts with the machine's variables."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness.cli import cuttle, ok
from tests.integration.harness.cluster import BIN, Cluster, Server, Tentacle, wait_for
from tests.integration.harness.tasks import finished_task, kill_marked, log_lines

pytestmark = pytest.mark.integration

# alice may deploy (so run scripts) in Dev only; bob may only look at Production.
MODEL = """
environments:
  - name: Dev
  - name: Production
users:
  - name: alice
  - name: bob
teams:
  - name: Dev operators
    members: [alice]
    grants:
      - role: deploy
        environments: [Dev]
  - name: Production watchers
    members: [bob]
    grants:
      - role: view
        environments: [Production]
"""


@pytest.fixture
def fleet(cluster: Cluster, tmp_path: Path) -> Server:
    """A server with the model above and one polling Tentacle in each environment."""
    server = cluster.start_server()
    model = tmp_path / "model.yaml"
    model.write_text(MODEL)
    ok(cuttle(server, "apply", "-f", str(model)))
    server.environments.update({"dev", "production"})
    cluster.add_tentacle("web-dev", "polling", ("Dev",), ("web",))
    cluster.add_tentacle("web-prod", "polling", ("Production",), ("web", "db"))
    for name in ("web-dev", "web-prod"):
        cluster.tentacles[name].wait_connected()
    return server


def _key_for(server: Server, user: str) -> dict[str, str]:
    created = json.loads(
        ok(cuttle(server, "api-key", "create", "--user", user, "--output", "json")).stdout
    )
    return {"CUTTLE_API_KEY": created["api_key"]}


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result).stdout)


def _names(machines: list[dict[str, Any]]) -> list[str]:
    return sorted(m["name"] for m in machines)


def _refused(result: subprocess.CompletedProcess[str], needs: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "[permission_denied]" in result.stderr, result.stderr
    assert needs in result.stderr, result.stderr


def test_operations_are_authorized_by_environment_and_audited(fleet: Server) -> None:
    server = fleet
    alice, bob = _key_for(server, "alice"), _key_for(server, "bob")

    # Machines are seen through one of their environments.
    assert _names(_json(cuttle(server, "machine", "list", "--output", "json", env=alice))) == [
        "web-dev"
    ]
    assert _names(_json(cuttle(server, "machine", "list", "--output", "json", env=bob))) == [
        "web-prod"
    ]
    assert _names(_json(cuttle(server, "machine", "list", "--output", "json"))) == [
        "web-dev",
        "web-prod",
    ]

    # A script needs deploy in every environment of the chosen machines.
    body = "echo hi from #{Octopus.Machine.Name} in #{Octopus.Environment.Name}"
    run = ok(cuttle(server, "script", "run", "--machine", "web-dev", "--", body, env=alice))
    assert "web-dev: hi from web-dev in Dev" in run.stdout, run.stdout
    _refused(
        cuttle(server, "script", "run", "--role", "web", "--", "echo no", env=alice),
        "needs the deploy role for environment 'Production'",
    )
    _refused(
        cuttle(server, "script", "run", "--machine", "web-prod", "--", "echo no", env=bob),
        "needs the deploy role for environment 'Production'",
    )
    ok(cuttle(server, "script", "run", "--machine", "web-prod", "--", "echo prod"))

    # Tasks are seen where they ran; each listing holds only its caller's share.
    alices = _json(cuttle(server, "task", "list", "--output", "json", env=alice))
    bobs = _json(cuttle(server, "task", "list", "--output", "json", env=bob))
    everything = _json(cuttle(server, "task", "list", "--output", "json"))
    assert [t["started_by"] for t in alices] == ["alice"]
    assert len(bobs) == 1
    assert bobs[0]["started_by"] != "alice"
    assert {t["id"] for t in everything} == {alices[0]["id"], bobs[0]["id"]}
    prod_task, dev_task = bobs[0]["id"], alices[0]["id"]
    shown = _json(cuttle(server, "task", "show", prod_task[:8], "--output", "json", env=bob))
    assert shown["id"] == prod_task
    assert "web-prod: prod" in "\n".join(
        f"web-prod: {line}" for line in log_lines(server, prod_task)
    )
    ok(cuttle(server, "task", "log", prod_task[:10], env=bob))
    _refused(
        cuttle(server, "task", "show", dev_task, env=bob),
        "needs the view role for environment 'Dev' to see the task",
    )
    _refused(
        cuttle(server, "task", "log", dev_task, env=bob),
        "needs the view role for environment 'Dev' to read its log",
    )
    # Cancelling needs the role that could have started it.
    _refused(
        cuttle(server, "task", "cancel", prod_task, env=bob),
        "needs the deploy role for environment 'Production' to cancel the task",
    )

    # Changing machines: edit to update, administer to remove or re-trust.
    _refused(
        cuttle(server, "machine", "update", "web-dev", "--role", "api", env=alice),
        "needs the edit role for environment 'Dev'",
    )
    _refused(
        cuttle(server, "machine", "remove", "web-dev", "--yes", env=alice),
        "needs the administer role for environment 'Dev'",
    )
    _refused(
        cuttle(server, "machine", "update", "web-prod", "--role", "api", env=alice),
        "needs the view role in one of the environments of machine 'web-prod'",
    )
    ok(cuttle(server, "machine", "update", "web-dev", "--role", "web", "--role", "api"))

    # The trail: who ran what (by hash, never values), who registered and changed machines,
    # who made and revoked keys.
    ok(cuttle(server, "api-key", "revoke", "--all", "--user", "bob"))
    scripts = _json(cuttle(server, "events", "--kind", "task", "--output", "json"))
    runs = [e for e in scripts if e["category"] == "script run"]
    assert [e["actor"] for e in runs][-1] == "alice"
    alice_run = next(e for e in runs if e["actor"] == "alice")
    assert alice_run["details"]["script_sha256"] == hashlib.sha256(body.encode()).hexdigest()
    assert alice_run["details"]["machines"] == ["web-dev"]
    assert alice_run["details"]["task_id"] == dev_task
    machine_events = _json(cuttle(server, "events", "--kind", "machine", "--output", "json"))
    categories = [(e["category"], e["name"]) for e in machine_events]
    assert ("machine registered", "web-dev") in categories
    assert ("machine registered", "web-prod") in categories
    assert categories[0] == ("machine updated", "web-dev")
    keys = _json(cuttle(server, "events", "--kind", "api_key", "--output", "json"))
    assert [e["category"] for e in keys] == [
        "api key revoked",
        "api key created",
        "api key created",
    ]
    assert all(e["actor"] == keys[0]["actor"] for e in keys)
    # The revoked key stops working within the key cache time; what it did stays on record.
    assert "alice" in {e["actor"] for e in runs}


def test_script_secrets_never_reach_the_trail_and_cancels_are_audited(
    fleet: Server, tmp_path: Path
) -> None:
    server = fleet
    alice = _key_for(server, "alice")
    secret = f"s3cret-{uuid.uuid4().hex}"
    mark = f"CUTTLE_TEST_MARK={uuid.uuid4().hex}"
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    # The script waits on a FIFO the test never writes: it runs until cancelled.
    body = f'export {mark}\necho "started #{{Token}}"\ncat {gate}\n'
    out_path = tmp_path / "run.out"
    with out_path.open("wb") as out:
        run = subprocess.Popen(
            [
                str(BIN / "cuttle"),
                "script",
                "run",
                "--machine",
                "web-dev",
                "--sensitive-variable",
                "Token=CUTTLE_TEST_TOKEN",
                "--",
                body,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**server.cli_env(), **alice, "CUTTLE_TEST_TOKEN": secret},
            start_new_session=True,
        )
    try:
        task_id = wait_for(
            lambda: _only_running(server), 30, "the script to be running", interval=0.2
        )
        # Substituted into the body, and masked on the way back.
        wait_for(
            lambda: "started ********" in log_lines(server, task_id),
            20,
            "the masked line in the log",
            interval=0.2,
        )
        table = ok(cuttle(server, "task", "show", task_id[:6])).stdout
        row = next(line for line in table.splitlines() if "web-dev" in line)
        assert "running" in row, table
        assert "-1" not in row, table
        assert "pending" not in row, table
        listed = ok(cuttle(server, "task", "list", "--state", "running")).stdout
        # Full ids in the table, and who started it.
        assert task_id in listed, listed
        assert "alice" in listed, listed
        ok(cuttle(server, "task", "cancel", task_id[:7], "--reason", "enough", env=alice))
        wait_for(lambda: finished_task(server, task_id), 30, "the task to finish", interval=0.2)
        assert run.wait(timeout=30) != 0
    finally:
        kill_marked(mark.encode())
        if run.poll() is None:
            run.kill()
            run.wait(timeout=10)
    trail = ok(cuttle(server, "events", "--kind", "task", "--output", "json")).stdout
    assert secret not in trail
    events = json.loads(trail)
    (cancel,) = [e for e in events if e["category"] == "task cancelled"]
    assert cancel["actor"] == "alice"
    assert cancel["details"]["reason"] == "enough"
    (script,) = [e for e in events if e["category"] == "script run"]
    assert script["details"]["variables"] == ["Token"]
    assert script["details"]["script_sha256"] == hashlib.sha256(body.encode()).hexdigest()


def _only_running(server: Server) -> str | None:
    running = server.cli_json("task", "list", "--state", "running")
    return running[0]["id"] if len(running) == 1 else None


def test_task_list_filters_and_the_machine_variables_of_ad_hoc_scripts(fleet: Server) -> None:
    server = fleet
    alice = _key_for(server, "alice")
    ok(cuttle(server, "script", "run", "--machine", "web-dev", "--", "echo one", env=alice))
    failing = cuttle(server, "script", "run", "--machine", "web-prod", "--", "exit 3")
    assert failing.returncode == 1
    body = (
        "echo roles=#{Octopus.Machine.Roles} env=#{Octopus.Environment.Name}"
        " unknown=#{Not.A.Variable}"
    )
    run = ok(cuttle(server, "script", "run", "--environment", "Production", "--", body))
    assert "web-prod: roles=web,db env=Production unknown=#{Not.A.Variable}" in run.stdout

    def ids(*args: str) -> list[str]:
        return [t["id"] for t in server.cli_json("task", "list", *args)]

    every = ids()
    assert len(every) == 3
    assert all(len(i) == 32 for i in every)
    (failed,) = ids("--state", "failed")
    assert failed == every[1]
    assert ids("--started-by", "alice") == [every[2]]
    assert ids("--environment", "production") == every[:2]
    assert ids("--environment", "Dev", "--state", "success") == [every[2]]
    # A project that does not exist is an error, not an empty list (issue 15: names that do
    # not exist are errors).
    no_project = cuttle(server, "task", "list", "--project", "Web")
    assert no_project.returncode == 2
    assert "project 'Web' does not exist" in no_project.stderr
    assert ids("--since", "1h") == every
    assert ids("--since", "2099-01-01T00:00:00Z") == []
    assert ids("--limit", "2") == every[:2]
    bad = cuttle(server, "task", "list", "--since", "a while")
    assert bad.returncode == 2
    assert "neither an age" in bad.stderr

    table = ok(cuttle(server, "task", "list")).stdout
    for task_id in every:
        assert task_id in table, table
    shown = ok(cuttle(server, "task", "show", failed[:5])).stdout
    row = next(line for line in shown.splitlines() if "web-prod" in line)
    assert "failed" in row, shown
    assert " 3 " in row, shown
    missing = cuttle(server, "task", "show", "ffffffffffffffffffffffffffffffff0")
    assert missing.returncode != 0
    assert "[not_found]" in missing.stderr, missing.stderr

    # The machine's tenant, as the script console gives it: a machine of one tenant runs for it.
    ok(cuttle(server, "tenant", "create", "Contoso"))
    ok(cuttle(server, "machine", "update", "web-prod", "--tenant", "Contoso"))
    tenant = ok(
        cuttle(
            server,
            "script",
            "run",
            "--machine",
            "web-prod",
            "--",
            "echo for=#{Octopus.Deployment.Tenant.Name}",
        )
    )
    assert "web-prod: for=Contoso" in tenant.stdout, tenant.stdout


def test_a_registration_key_registers_and_re_registers_and_does_nothing_else(
    cluster: Cluster, fleet: Server
) -> None:
    server = fleet
    made = _json(
        cuttle(
            server,
            "api-key",
            "create",
            "--name",
            "installer",
            "--permission",
            "machine:register",
            "--output",
            "json",
        )
    )
    register = made["api_key"]

    def register_with(
        tentacle: Tentacle, *extra: str, key: str = register, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return tentacle.tentacle(
            "register-with",
            "--server",
            server.url,
            "--server-thumbprint",
            server.thumbprint,
            "--api-key",
            key,
            "--name",
            tentacle.name,
            "--comms-style",
            "polling",
            "--public-hostname",
            tentacle.host,
            "--environment",
            "Dev",
            *extra,
            check=check,
        )

    # A new Tentacle registers itself with the installer's key (polling: no need to run it).
    fresh = Tentacle("web-new", cluster.root / "web-new", "polling", server, cluster.procs)
    fresh.tentacle("create-instance")
    fresh.tentacle("configure", "--trust-certificate", str(server.home / "server-certificate.pem"))
    register_with(fresh)
    # As the installer does on a reinstall: the same name again, with --force.
    register_with(fresh, "--force")
    as_installer = {"CUTTLE_API_KEY": register}
    _refused(
        cuttle(server, "machine", "list", env=as_installer),
        "may not call ListMachines: a machine:register key only registers machines",
    )
    _refused(cuttle(server, "task", "list", env=as_installer), "may not call ListTasks")
    trail = _json(cuttle(server, "events", "--kind", "machine", "--output", "json"))
    mine = [(e["category"], e["details"]["trust_changed"]) for e in trail if e["name"] == "web-new"]
    assert mine == [("machine re-registered", False), ("machine registered", False)]
    assert {e["actor"] for e in trail if e["name"] == "web-new"} == {"installer"}

    # A rebuilt VM (a new certificate under the same name) changes the machine's trust. A
    # person needs administer for that; alice deploys in Dev but does not administer it.
    rebuilt = Tentacle("web-new", cluster.root / "web-new-2", "polling", server, cluster.procs)
    rebuilt.tentacle("create-instance")
    rebuilt.tentacle(
        "configure", "--trust-certificate", str(server.home / "server-certificate.pem")
    )
    alice = _key_for(server, "alice")["CUTTLE_API_KEY"]
    refused = register_with(rebuilt, "--force", key=alice, check=False)
    assert refused.returncode != 0
    assert (
        "needs the administer role for environment 'Dev' to register a machine or change its trust"
    ) in refused.stderr, refused.stderr
    register_with(rebuilt, "--force")
    ok(cuttle(server, "machine", "remove", "web-new", "--yes"))
    trail = _json(cuttle(server, "events", "--kind", "machine", "--output", "json"))
    removed, replaced = [e for e in trail if e["name"] == "web-new"][:2]
    assert (replaced["category"], replaced["details"]["trust_changed"]) == (
        "machine re-registered",
        True,
    )
    assert replaced["actor"] == "installer"
    assert replaced["details"]["previous_thumbprint"] != replaced["details"]["thumbprint"]
    assert removed["category"] == "machine removed"
    assert removed["actor"] not in ("", "installer")
    assert removed["details"]["thumbprint"] == replaced["details"]["thumbprint"]


def test_task_list_filters_naming_nothing_are_errors_with_a_suggestion(fleet: Server) -> None:
    refused = cuttle(fleet, "task", "list", "--environment", "Prodution")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "environment 'Prodution' does not exist" in refused.stderr, refused.stderr
    assert "Production" in refused.stderr.split("does not exist", 1)[1], refused.stderr
    unknown = cuttle(fleet, "task", "list", "--project", "Nope")
    assert unknown.returncode == 2
    assert "project 'Nope' does not exist" in unknown.stderr, unknown.stderr
    # Names that exist filter as before (case-insensitively).
    ok(cuttle(fleet, "task", "list", "--environment", "production"))


# Two projects deploying to Dev; carol may only look at Api.
PROJECTS = """
users:
  - name: carol
projects:
  - name: Web
    process:
      steps:
        - name: Hello
          target_tags: [web]
          actions:
            - name: Hello
              type: run_script
              script:
                body: |
                  echo "hello from #{Octopus.Project.Name}"
  - name: Api
    process:
      steps:
        - name: Hello
          target_tags: [web]
          actions:
            - name: Hello
              type: run_script
              script:
                body: |
                  echo "hello from #{Octopus.Project.Name}"
teams:
  - name: Api watchers
    members: [carol]
    grants:
      - role: view
        projects: [Api]
"""


def test_deployment_tasks_are_listed_shown_and_cancelled_by_their_project(
    fleet: Server, tmp_path: Path
) -> None:
    server = fleet
    model = tmp_path / "projects.yaml"
    model.write_text(PROJECTS)
    ok(cuttle(server, "apply", "-f", str(model)))
    ok(cuttle(server, "script", "run", "--machine", "web-dev", "--", "echo ad-hoc"))
    deployed = {}
    for project in ("Web", "Api"):
        ok(cuttle(server, "release", "create", "--project", project, "--version", "1.0.0"))
        ok(
            cuttle(
                server,
                "deploy",
                "--project",
                project,
                "--release",
                "1.0.0",
                "--environment",
                "Dev",
                "--wait",
            )
        )
        (task,) = server.cli_json("task", "list", "--project", project)
        deployed[project] = task["id"]
    assert [t["id"] for t in server.cli_json("task", "list", "--project", "web")] == [
        deployed["Web"]
    ]
    assert [t["id"] for t in server.cli_json("task", "list", "--environment", "Dev")][:2] == [
        deployed["Api"],
        deployed["Web"],
    ]
    assert len(server.cli_json("task", "list", "--environment", "Dev")) == 3
    # Renamed since: its deployments are listed under the new name.
    ok(cuttle(server, "project", "update", "Web", "--rename", "Website"))
    assert [t["id"] for t in server.cli_json("task", "list", "--project", "Website")] == [
        deployed["Web"]
    ]
    ok(cuttle(server, "project", "update", "Website", "--rename", "Web"))

    carol = _key_for(server, "carol")

    # Api's deployment, not Web's; filters work for her too (only an administrator may list
    # every space, so her names are checked in her own space).
    def carols(*args: str) -> list[str]:
        listed = _json(cuttle(server, "task", "list", *args, "--output", "json", env=carol))
        assert all(t["started_by"] != "carol" for t in listed)
        return [t["id"] for t in listed]

    assert deployed["Api"] in carols()
    assert deployed["Web"] not in carols()
    assert carols("--project", "api") == [deployed["Api"]]
    assert carols("--project", "Api", "--environment", "Dev") == [deployed["Api"]]
    assert carols("--project", "Api", "--environment", "Production") == []
    # A project she may not see is one she cannot name, as everywhere else in the model.
    refused = cuttle(server, "task", "list", "--project", "Web", env=carol)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "project 'Web' does not exist" in refused.stderr, refused.stderr
    shown = _json(
        cuttle(server, "task", "show", deployed["Api"][:8], "--output", "json", env=carol)
    )
    assert shown["id"] == deployed["Api"]
    assert "hello from Api" in ok(cuttle(server, "task", "log", deployed["Api"], env=carol)).stdout
    _refused(
        cuttle(server, "task", "show", deployed["Web"], env=carol),
        "needs the view role for project 'Web' in environment 'Dev' to see the task",
    )
    _refused(
        cuttle(server, "task", "log", deployed["Web"][:9], env=carol),
        "needs the view role for project 'Web' in environment 'Dev' to read its log",
    )
    _refused(
        cuttle(server, "task", "cancel", deployed["Api"], env=carol),
        "needs the deploy role for project 'Api' in environment 'Dev' to cancel the task",
    )


def test_a_running_deployment_target_says_running_and_a_prefix_cancels_it(
    fleet: Server, tmp_path: Path
) -> None:
    server = fleet
    mark = f"CUTTLE_TEST_MARK={uuid.uuid4().hex}"
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    # The script waits on a FIFO the test never writes: it runs until cancelled.
    body = f'export {mark}\necho "waiting on the gate"\ncat {gate}\n'
    project = {
        "name": "Blocker",
        "process": {
            "steps": [
                {
                    "name": "Wait",
                    "target_tags": ["web"],
                    "actions": [{"name": "Wait", "type": "run_script", "script": {"body": body}}],
                }
            ]
        },
    }
    model = tmp_path / "blocker.yaml"
    model.write_text(json.dumps({"projects": [project]}))
    ok(cuttle(server, "apply", "-f", str(model)))
    ok(cuttle(server, "release", "create", "--project", "Blocker", "--version", "1.0.0"))
    try:
        ok(
            cuttle(
                server,
                "deploy",
                "--project",
                "Blocker",
                "--release",
                "1.0.0",
                "--environment",
                "Dev",
            )
        )
        (task,) = server.cli_json("task", "list", "--project", "Blocker")
        task_id = task["id"]
        wait_for(
            lambda: "waiting on the gate" in log_lines(server, task_id),
            30,
            "the deployment's script to run",
            interval=0.2,
        )
        table = ok(cuttle(server, "task", "show", task_id[:6])).stdout
        row = next(line for line in table.splitlines() if "web-dev" in line)
        assert "running" in row, table
        assert "-1" not in row, table
        assert "pending" not in row, table
        (listed,) = server.cli_json("task", "list", "--state", "running")
        assert listed["id"] == task_id
        ok(cuttle(server, "task", "cancel", task_id[:7], "--reason", "enough"))
        ended = wait_for(lambda: finished_task(server, task_id), 30, "the deployment to end")
        assert ended["state"] == "cancelled", ended
    finally:
        kill_marked(mark.encode())
    events = _json(
        cuttle(server, "--space", "Default", "events", "--kind", "task", "--output", "json")
    )
    (cancel,) = [e for e in events if e["category"] == "task cancelled"]
    assert cancel["details"]["task_id"] == task_id
    assert cancel["details"]["reason"] == "enough"
